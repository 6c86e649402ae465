"""Dataset layouts: find the cases in a folder (or a YAML/CSV/JSON descriptor), one module per layout.

:func:`load_dataset` recognises these layouts (``layout=`` forces one); each module documents its own:

``folders`` (:mod:`.folders`)
    Image and mask folders paired by file name (``cxr/`` + ``masks/``, ``images/`` + ``labels/``, nnU-Net channels).
``msd`` (:mod:`.msd`)
    Medical Segmentation Decathlon / nnU-Net: ``dataset.json`` + ``imagesTr/`` + ``labelsTr/``; declares its labels.
``luna16`` (:mod:`.luna16`)
    LUNA16 CT + ``seg-lungs-LUNA16`` masks; declares ``{0: "background", 1: "lung"}``.
``dsb2018`` (:mod:`.dsb2018`)
    Data Science Bowl 2018 nuclei; declares ``{0: "background", 1: "nucleus"}``.
``case_folders`` (:mod:`.case_folders`)
    One folder per case, one file per channel plus a mask file (BRATS).
``list`` (:mod:`.case_list`)
    An explicit CSV or JSON case list, with an optional image-level ``class`` per case.
``class_folders`` (:mod:`.class_folders`)
    One folder per class (``ROOT/<class name>/*.png``): image classification without masks.

A YAML descriptor (:mod:`.descriptor`) names the layout and its options. Options every layout takes
(:data:`COMMON_OPTIONS`): ``mask_threshold`` (``"auto"``, a number or ``None``), ``label_map`` (``{raw: label}``),
``labels`` (the declared label set: ``[0, 1]``, ``{0: "background", 1: "lung"}`` or ``{"background": 0, "lung": 1}``;
its values are the allowed mask values), ``merge`` (``"union"`` or ``"index"`` for several mask files),
``patient_pattern`` (regex whose first group is the patient id), ``drop_alpha``, ``geometry_tol``, ``class_pattern``
(regex whose first group, a number or a class name, is the image-level class of a case without one: the chest X-rays'
``_0``/``_1``, :mod:`.classes`).

New layouts register with :func:`register_layout` (a scan function returning a :class:`ScanResult`).
"""

from agseg.data.layouts import (  # noqa: F401  (registers)
    case_folders,
    case_list,
    class_folders,
    dsb2018,
    folders,
    luna16,
    msd,
)
from agseg.data.layouts.descriptor import DESCRIPTOR_NAMES
from agseg.data.layouts.registry import (
    COMMON_OPTIONS,
    LayoutSpec,
    ScanResult,
    detect_layout,
    get_layout,
    list_layouts,
    load_dataset,
    register_layout,
)

__all__ = [
    "COMMON_OPTIONS",
    "DESCRIPTOR_NAMES",
    "LayoutSpec",
    "ScanResult",
    "detect_layout",
    "get_layout",
    "list_layouts",
    "load_dataset",
    "register_layout",
]
