"""Compatibility module: the dataset API before it was split by concern. New code imports from the modules below.

* :mod:`agseg.data.labels`: :class:`MaskSpec`, :func:`label_counts`, :func:`parse_labels` (mask rules, label sets);
* :mod:`agseg.data.cases`: :class:`Case`, :class:`CaseRef`, :class:`DatasetIndex`, :func:`save_case_list`;
* :mod:`agseg.data.layouts`: :func:`load_dataset`, :func:`detect_layout`, :func:`list_layouts`,
  :func:`register_layout`, one module per layout, YAML descriptors;
* :mod:`agseg.data.inspect`: :func:`inspect_dataset`.
"""

from agseg.data.cases import Case, CaseRef, DatasetIndex, save_case_list
from agseg.data.inspect import inspect_dataset
from agseg.data.labels import MaskSpec, label_counts, parse_labels
from agseg.data.layouts import (
    COMMON_OPTIONS,
    DESCRIPTOR_NAMES,
    LayoutSpec,
    ScanResult,
    detect_layout,
    get_layout,
    list_layouts,
    load_dataset,
    register_layout,
)
from agseg.data.layouts.folders import IMAGE_DIR_NAMES, MASK_DIR_NAMES, MASK_SUFFIXES

__all__ = [
    "COMMON_OPTIONS",
    "DESCRIPTOR_NAMES",
    "IMAGE_DIR_NAMES",
    "MASK_DIR_NAMES",
    "MASK_SUFFIXES",
    "Case",
    "CaseRef",
    "DatasetIndex",
    "LayoutSpec",
    "MaskSpec",
    "ScanResult",
    "detect_layout",
    "get_layout",
    "inspect_dataset",
    "label_counts",
    "list_layouts",
    "load_dataset",
    "parse_labels",
    "register_layout",
    "save_case_list",
]
