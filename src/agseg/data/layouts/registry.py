"""The layout registry: how a dataset's files are found, by name (``"folders"``, ``"msd"``, ...).

A layout is a scan function ``scan(root, options) -> ScanResult`` registered with :func:`register_layout`, with the
options it accepts (on top of :data:`COMMON_OPTIONS`), their defaults, and optionally a ``detect(path) -> bool`` used
by :func:`detect_layout` in ``order``. :func:`load_dataset` resolves descriptors, checks the options, scans, removes
duplicate ids, and returns the :class:`DatasetIndex` with the label set the layout declares.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

from agseg.data.cases import CaseRef, DatasetIndex, _log_skipped
from agseg.data.errors import DataError, SkippedCase
from agseg.data.labels import parse_labels
from agseg.data.layouts.descriptor import descriptor_file, is_descriptor, read_descriptor

log = logging.getLogger(__name__)

COMMON_OPTIONS = frozenset(
    {"mask_threshold", "label_map", "labels", "merge", "patient_pattern", "drop_alpha", "geometry_tol", "class_pattern"}
)
"""Options every layout takes (see :class:`~agseg.data.layouts.common.Builder`; ``class_pattern``:
:mod:`~agseg.data.layouts.classes`)."""


class ScanResult(NamedTuple):
    """What a layout's scan found.

    Attributes:
        cases: The cases, in a stable order.
        problems: Bad cases (raised, or skipped with ``skip_bad``), each naming its file.
        warnings: Non-fatal findings; one starting with ``"ignored"`` is logged at INFO, others at WARNING.
        labels: The declared label set ``{value: name}`` (``None``: nothing declared). A scan returning a plain
            3-tuple declares what its ``labels`` option says.
    """

    cases: list[CaseRef]
    problems: list[DataError]
    warnings: list[str]
    labels: dict[int, str] | None = None


ScanFn = Callable[[Path, dict[str, Any]], "ScanResult | tuple[list[CaseRef], list[DataError], list[str]]"]
DetectFn = Callable[[Path], bool]


@dataclass(frozen=True)
class LayoutSpec:
    """A registered layout.

    Attributes:
        name: Registry name.
        scan: ``scan(root, options) -> ScanResult``.
        options: Accepted option names (the layout's own plus :data:`COMMON_OPTIONS`).
        defaults: Option defaults (the caller's and the descriptor's options override them).
        detect: ``detect(path) -> bool`` for :func:`detect_layout` (``path`` a folder or a file), or ``None``.
        order: Detectors run in increasing ``order``; the first that says yes names the layout.
    """

    name: str
    scan: ScanFn
    options: frozenset[str]
    defaults: Mapping[str, Any]
    detect: DetectFn | None = None
    order: int = 100


_LAYOUTS: dict[str, LayoutSpec] = {}


def register_layout(
    name: str, options: Sequence[str] = (), *, detect: DetectFn | None = None, order: int = 100, **defaults: Any
) -> Callable[[ScanFn], ScanFn]:
    """Decorator registering ``scan(root, options) -> ScanResult`` as layout ``name``.

    Args:
        name: Registry name (what ``layout=`` and descriptors say).
        options: Option names the layout takes besides :data:`COMMON_OPTIONS`.
        detect: ``detect(path) -> bool`` (a folder or a file) so that :func:`detect_layout` recognises it.
        order: Detection order (built-ins: msd 10, luna16 20, dsb2018 30, folders 40, class_folders 45, case_folders 50,
            list 60).
        **defaults: Option defaults, e.g. ``label_map={3: 1, 4: 1, 5: 0}``, ``labels={0: "background", 1: "lung"}``.

    Raises:
        ValueError: ``name`` is already registered, or a default is not an accepted option.

    Example:
        >>> @register_layout("my_layout", ("images",), detect=lambda p: (p / "my_images").is_dir())
        ... def _scan(root, o):
        ...     ...
    """

    def deco(fn: ScanFn) -> ScanFn:
        if name in _LAYOUTS or name == "descriptor":
            raise ValueError(f"layout {name!r} is already registered")
        allowed = frozenset(options) | COMMON_OPTIONS
        if bad := sorted(set(defaults) - allowed):
            raise ValueError(f"defaults {bad} of layout {name!r} are not among its options {sorted(allowed)}")
        _LAYOUTS[name] = LayoutSpec(name, fn, allowed, dict(defaults), detect, order)
        return fn

    return deco


def list_layouts() -> list[str]:
    """Names of the known layouts."""
    return sorted(_LAYOUTS)


def get_layout(name: str) -> LayoutSpec:
    """The :class:`LayoutSpec` of ``name``.

    Raises:
        ValueError: Unknown name (the message lists the known ones).
    """
    try:
        return _LAYOUTS[name]
    except KeyError:
        raise ValueError(f"unknown layout {name!r}; known: {', '.join(list_layouts())}") from None


def detect_layout(path: str | Path) -> str:
    """Name of the layout of ``path`` (a folder, a YAML descriptor, or a CSV/JSON case list).

    ``"descriptor"`` for a YAML file or a folder holding ``agseg_dataset.yaml``; otherwise the first registered
    layout (by ``order``) whose ``detect`` says yes.

    Raises:
        DataError: Not found, or no known layout fits.
    """
    p = Path(path)
    if not p.exists():
        raise DataError(p, "dataset path not found")
    if is_descriptor(p):
        return "descriptor"
    for spec in sorted(_LAYOUTS.values(), key=lambda s: (s.order, s.name)):
        if spec.detect is not None and spec.detect(p):
            return spec.name
    if p.is_file():  # no layout takes this file (e.g. one image)
        raise DataError(p, "is one file, not a dataset: give the dataset's folder, a .yaml descriptor or a .csv/.json "
                        "case list")  # fmt: skip
    raise DataError(
        p,
        "could not recognise the dataset layout (image+mask folders, dataset.json, LUNA16, DSB 2018, case folders); "
        "pass layout=... or add an agseg_dataset.yaml descriptor",
    )


def load_dataset(
    source: str | Path, layout: str | None = None, *, skip_bad: bool = False, **options: Any
) -> DatasetIndex:
    """Find the cases of a dataset (file names only; nothing is decoded until a case is loaded).

    Args:
        source: Dataset folder, YAML descriptor, or CSV/JSON case list.
        layout: Force a layout (see :func:`list_layouts`); ``None`` or ``"auto"``: detected.
        skip_bad: Skip (and log) cases with problems found while scanning (duplicate ids, missing files, ...)
            instead of raising. Problems inside files are found by :meth:`DatasetIndex.check` or on loading.
        **options: Layout options (override the descriptor's), e.g. ``mask_threshold=127``,
            ``class_pattern="_(\\d)$"``, ``label_map={3: 1, 4: 1, 5: 0}``, ``images="CXR_png"``,
            ``channels=["Flair*", "T1c*"]``,
            ``labels={0: "background", 1: "lung"}`` (or ``[0, 1]``, or ``{"background": 0, "lung": 1}``).

    Returns:
        The :class:`DatasetIndex`; its ``labels`` is the declared label set (``None`` when nothing is declared).

    Raises:
        DataError: Empty dataset, a scan problem (naming the file) when not ``skip_bad``, bad ``labels`` in a
            descriptor (naming it).
        ValueError: Unknown layout or option (listing the valid ones), bad ``labels`` given as a keyword.
    """
    src = Path(source)
    name = layout if layout not in (None, "", "auto") else detect_layout(src)
    desc_file: Path | None = None
    from_desc: set[str] = set()
    if name == "descriptor":
        desc_file = descriptor_file(src)
        root, desc = read_descriptor(src)
        name = desc.pop("layout", None) or detect_layout(root)
        from_desc = set(desc) - set(options)
        options = {**desc, **options}
        src = root
    spec = get_layout(name)
    unknown = set(options) - spec.options
    if unknown:
        raise ValueError(f"unknown option(s) {sorted(unknown)} for layout {name!r}; allowed: {sorted(spec.options)}")
    opts = {**copy.deepcopy(dict(spec.defaults)), **options}
    if "labels" in opts:
        try:
            parse_labels(opts["labels"])
        except ValueError as e:
            if desc_file is not None and "labels" in from_desc:
                raise DataError(desc_file, f"bad 'labels': {e}") from e
            raise ValueError(f"bad 'labels' option: {e}") from e
    if not src.exists():
        raise DataError(src, "dataset path not found")
    root = src.parent if src.is_file() and name == "msd" else src
    res = ScanResult(*spec.scan(root, opts))
    cases, problems = _dedupe(res.cases, res.problems)
    labels = res.labels if res.labels is not None else parse_labels(opts.get("labels"))
    if opts.get("class_pattern"):
        from agseg.data.layouts.classes import apply_class_pattern

        cases, more = apply_class_pattern(cases, opts["class_pattern"], labels)
        problems.extend(more)
    skipped = []
    if problems:
        if not skip_bad:
            e = problems[0]
            more = f" (and {len(problems) - 1} more problem(s); skip_bad lists them all)" if len(problems) > 1 else ""
            raise DataError(e.path, e.problem + more, e.case_id)
        skipped = [SkippedCase.from_error(e) for e in problems]
        _log_skipped(skipped)
    for w in res.warnings:
        (log.info if w.startswith("ignored") else log.warning)("%s: %s", src, w)
    if not cases:
        if problems:  # every case was skipped: say why, with the first problem
            e = problems[0]
            raise DataError(e.path, f"{e.problem} (every case of {src} has a problem; this is the first)", e.case_id)
        raise DataError(src, f"empty dataset: no cases found (layout {name!r})")
    log.debug("%s: %d case(s), layout %s", src, len(cases), name)
    return DatasetIndex(src, name, cases, opts, skipped, list(res.warnings), labels)


def _dedupe(cases: list[CaseRef], problems: list[DataError]) -> tuple[list[CaseRef], list[DataError]]:
    seen: dict[str, CaseRef] = {}
    out = []
    problems = list(problems)
    for c in cases:
        if c.case_id in seen:
            problems.append(
                DataError(c.image_paths[0], f"duplicate case id {c.case_id!r} (also {seen[c.case_id].image_paths[0]})")
            )
            continue
        seen[c.case_id] = c
        out.append(c)
    return out, problems
