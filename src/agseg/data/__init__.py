"""agseg.data: read medical images with their geometry, find cases in dataset layouts, preprocess (undoably),
cache, augment, and feed PyTorch.

Public API::

    from agseg.data import load_dataset, Preprocessor, PreprocessConfig, PreprocessCache, SegmentationDataset
    index = load_dataset("../shared/data/cxr_lungs")                 # 400 CaseRef, layout "folders"
    pre = Preprocessor(PreprocessConfig(target_size=(256, 256), intensity="minmax01"))
    ds = SegmentationDataset(index, pre, cache=".agseg_cache", augment=AugmentConfig())
    item = ds[0]        # {"image": float32 (C, H, W), "label": int64 (H, W), "case_id": str}

Arrays are channels first ``(C, *spatial)`` in array order ``(z, y, x)``; :class:`Geometry` keeps ITK-order spacing,
origin and direction. Bad input raises :class:`DataError` naming the file.
"""

from agseg.data.augment import AugmentConfig, Augmenter
from agseg.data.cache import PreprocessCache
from agseg.data.cases import Case, CaseRef, DatasetIndex, save_case_list
from agseg.data.errors import DataError, SkippedCase
from agseg.data.inspect import inspect_dataset
from agseg.data.io import (
    Geometry,
    detect_format,
    mask_path_for,
    read_header,
    read_image,
    read_mask,
    split_ext,
    write_image,
    write_mask,
)
from agseg.data.labels import MaskSpec, label_counts, parse_labels
from agseg.data.layouts import detect_layout, list_layouts, load_dataset, register_layout
from agseg.data.preprocess import PreprocessConfig, Preprocessor, PreprocessRecord, PreprocessResult, invert
from agseg.data.synthetic import chest_phantom, phantom_3d, write_dataset
from agseg.data.torch_dataset import SegmentationDataset

__all__ = [
    "AugmentConfig",
    "Augmenter",
    "Case",
    "CaseRef",
    "DataError",
    "DatasetIndex",
    "Geometry",
    "MaskSpec",
    "PreprocessCache",
    "PreprocessConfig",
    "PreprocessRecord",
    "PreprocessResult",
    "Preprocessor",
    "SegmentationDataset",
    "SkippedCase",
    "chest_phantom",
    "detect_format",
    "detect_layout",
    "inspect_dataset",
    "invert",
    "label_counts",
    "list_layouts",
    "load_dataset",
    "mask_path_for",
    "parse_labels",
    "phantom_3d",
    "read_header",
    "read_image",
    "read_mask",
    "register_layout",
    "save_case_list",
    "split_ext",
    "write_dataset",
    "write_image",
    "write_mask",
]
