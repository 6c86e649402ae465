"""Inspect a dataset: read every case and summarise shapes, spacings, intensities and labels; collect problems."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from agseg.data.cases import DatasetIndex, _progress
from agseg.data.errors import DataError, SkippedCase
from agseg.data.labels import label_counts
from agseg.data.layouts import load_dataset


def inspect_dataset(
    source: str | Path | DatasetIndex,
    layout: str | None = None,
    *,
    limit: int | None = None,
    progress: bool = False,
    **options: Any,
) -> dict[str, Any]:
    """Read every case and summarise the dataset; problems are collected, not raised.

    Args:
        source: Dataset path (as :func:`load_dataset`) or an index.
        layout: Force a layout.
        limit: Inspect only the first ``limit`` cases.
        progress: Show a progress bar.
        **options: Layout options.

    Returns:
        A JSON-safe dict: ``root``, ``layout``, ``n_cases`` (good cases), ``n_labelled``, ``n_unlabelled``, ``ndim``,
        ``channels``, ``shapes`` (min/max/unique), ``spacings`` (array order ``(z, y, x)``), ``dtypes``,
        ``intensity`` (per channel min/max/mean/std, and the spread of per-case ranges), ``label_values``,
        ``label_counts`` (voxels), ``label_cases`` (cases containing each value), ``declared_labels`` (the
        layout's declared ``{value: name}`` with string keys, or ``None``), ``empty_masks``, ``problems``
        (``[{case_id, path, problem}]``: bad cases, not counted in ``n_cases``), ``warnings`` (a declared label that
        no inspected mask contains is one).
    """
    if isinstance(source, DatasetIndex):
        index, scan_problems = source, list(source.skipped)
    else:
        index = load_dataset(source, layout, skip_bad=True, **options)
        scan_problems = list(index.skipped)
    refs = index.cases[:limit] if limit else index.cases
    problems = [s.to_dict() for s in scan_problems]
    shapes, spacings, dtypes, channels = Counter(), Counter(), Counter(), Counter()
    stats: dict[int, list[float]] = {}
    case_min, case_max = [], []
    lab_counts, lab_cases = Counter(), Counter()
    n_ok = n_lab = empty = 0
    for ref in _progress(refs, progress, "inspecting"):
        try:
            case = ref.load()
        except DataError as e:
            problems.append(SkippedCase.from_error(e, ref.case_id).to_dict())
            continue
        n_ok += 1
        g = case.geometry
        shapes[g.shape] += 1
        spacings[tuple(round(s, 4) for s in g.array_spacing)] += 1
        dtypes[g.dtype] += 1
        channels[case.image.shape[0]] += 1
        for c, ch in enumerate(case.image):
            x = ch.astype(np.float64, copy=False)
            s = stats.setdefault(c, [0.0, 0.0, 0.0, np.inf, -np.inf])
            s[0] += x.size
            s[1] += float(x.sum())
            s[2] += float(np.square(x).sum())
            s[3] = min(s[3], float(x.min()))
            s[4] = max(s[4], float(x.max()))
        case_min.append(float(case.image.min()))
        case_max.append(float(case.image.max()))
        if case.label is not None:
            n_lab += 1
            counts = label_counts(case.label)
            lab_counts.update(counts)
            lab_cases.update(counts.keys())
            empty += set(counts) <= {0}
    intensity = {}
    for c, (n, s1, s2, lo, hi) in sorted(stats.items()):
        mean = s1 / n
        intensity[str(c)] = {"min": lo, "max": hi, "mean": mean, "std": float(np.sqrt(max(s2 / n - mean**2, 0.0)))}
    warnings = list(index.warnings)
    if len(dtypes) > 1:
        warnings.append(f"mixed image dtypes: {dict(dtypes)}")
    if case_max and max(case_max) - min(case_max) > 10 * max(1e-6, float(np.median(case_max)) - min(case_min)):
        warnings.append("intensity ranges differ widely between cases (consider per-case normalisation)")
    if empty:
        warnings.append(f"{empty} mask(s) contain only background")
    values = sorted(lab_counts)
    if values and (gaps := sorted(set(range(values[-1] + 1)) - set(values))):
        lone = [v for v in values if v and lab_cases[v] <= max(1, n_lab // 20)]
        where = ", ".join(f"{v} in {lab_cases[v]} case(s)" for v in values if v)
        warnings.append(
            f"label values {values} have gaps (no {_ranges(gaps)}; {where})"
            + (f": {lone} look like stray values" if lone else "")
            + "; declare data.labels or map values with label_map, otherwise every value found is a class"
        )
    if n_ok and n_lab < n_ok:
        warnings.append(f"{n_ok - n_lab} case(s) have no mask")
    if index.labels is not None and n_lab:
        unseen = [f"{v} ({name})" for v, name in index.labels.items() if v not in lab_counts]
        if unseen:
            warnings.append(f"declared label(s) {', '.join(unseen)} appear in none of the {n_lab} mask(s) read")
    if len(spacings) > 1:
        warnings.append(f"{len(spacings)} different spacings (consider resampling to a common spacing)")
    for sp in spacings:
        if max(sp) / max(min(sp), 1e-9) > 3:
            warnings.append(f"anisotropic spacing {list(sp)}")
            break
    shape_list = list(shapes)
    return {
        "root": str(index.root),
        "layout": index.layout,
        "n_cases": n_ok,
        "label_values": sorted(lab_counts),
        "label_counts": {str(k): v for k, v in sorted(lab_counts.items())},
        "n_labelled": n_lab,
        "n_unlabelled": n_ok - n_lab,
        "n_bad": len(problems),
        "ndim": len(shape_list[0]) if shape_list else None,
        "channels": {str(k): v for k, v in sorted(channels.items())},
        "shapes": {
            "min": [int(v) for v in np.min(shape_list, axis=0)] if shape_list else None,
            "max": [int(v) for v in np.max(shape_list, axis=0)] if shape_list else None,
            "n_unique": len(shapes),
            "most_common": [[list(s), n] for s, n in shapes.most_common(3)],
        },
        "spacings": {
            "min": [float(v) for v in np.min(list(spacings), axis=0)] if spacings else None,
            "max": [float(v) for v in np.max(list(spacings), axis=0)] if spacings else None,
            "n_unique": len(spacings),
            "most_common": [[list(s), n] for s, n in spacings.most_common(3)],
        },
        "dtypes": dict(dtypes),
        "intensity": {
            "per_channel": intensity,
            "case_min": [min(case_min), max(case_min)] if case_min else None,
            "case_max": [min(case_max), max(case_max)] if case_max else None,
        },
        "label_cases": {str(k): v for k, v in sorted(lab_cases.items())},
        "declared_labels": {str(k): v for k, v in index.labels.items()} if index.labels is not None else None,
        "empty_masks": empty,
        "problems": problems,
        "warnings": warnings,
    }


def _ranges(values: list[int]) -> str:
    """``[2, 3, 4, 6]`` -> ``"2-4, 6"``."""
    out, start, prev = [], None, None
    for v in [*values, None]:  # type: ignore[list-item]
        if start is None:
            start = prev = v
        elif v is not None and v == prev + 1:
            prev = v
        else:
            out.append(str(start) if start == prev else f"{start}-{prev}")
            start = prev = v
    return ", ".join(out)
