"""One pass over the data before any work: every case read once, and what training would trip over named first.

:func:`check_cases` loads every case (image channels and masks, with the checks of
:meth:`~agseg.data.cases.CaseRef.load`: unreadable or truncated files, NaN/Inf voxels in any format, channel files or
masks on another grid) and records its channels and size. The record is cached by the files' signatures, so a
second run reads nothing. :func:`check_consistency` then finds what a run would only discover mid-way: cases with
different channel counts, and cases of different sizes that the preprocessing leaves different while the batches
hold several cases.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from collections.abc import Sequence
from typing import Any

from agseg.data.errors import DataError

__all__ = ["check_cases", "check_consistency"]


def _key(ref: Any, cache: Any) -> str:
    blob = {"checked": 1, "case": cache._sources(ref)}
    return "checked-" + hashlib.sha256(json.dumps(blob, sort_keys=True, default=str).encode()).hexdigest()


def check_cases(refs: Sequence[Any], cache: Any = None, progress: bool = False) -> dict[str, dict[str, Any]]:
    """``{case_id: {"channels": C, "shape": [...]}}`` for every case, after reading each one in full.

    Raises:
        DataError: the first bad case (the message names the file and the problem).
    """
    out: dict[str, dict[str, Any]] = {}
    items: Any = list(refs)
    if progress:
        from tqdm.auto import tqdm

        items = tqdm(items, desc="checking cases", unit="case", leave=False, disable=None)
    for ref in items:
        key = _key(ref, cache) if cache is not None else None
        hit = cache.load_json(key) if key is not None else None
        if isinstance(hit, dict) and "shape" in hit:
            out[ref.case_id] = {"channels": int(hit["channels"]), "shape": list(hit["shape"])}
            continue
        case = ref.load()
        info = {"channels": int(case.image.shape[0]), "shape": [int(s) for s in case.image.shape[1:]]}
        out[ref.case_id] = info
        if key is not None:
            cache.save_json(key, {"case_id": ref.case_id, **info})
    return out


def check_consistency(refs: Sequence[Any], info: dict[str, dict[str, Any]], fixed_size: bool, batch_size: int) -> None:
    """Raise a ``DataError`` for what would fail mid-run: mixed channel counts, or mixed sizes with batches of
    several cases when the preprocessing does not give every case one size (``fixed_size``)."""
    by_id = {r.case_id: r for r in refs}
    channels = Counter(v["channels"] for v in info.values())
    if len(channels) > 1:
        usual = channels.most_common(1)[0][0]
        odd = next(c for c, v in info.items() if v["channels"] != usual)
        raise DataError(
            by_id[odd].image_paths[0],
            f"has {info[odd]['channels']} channel(s) where {channels[usual]} other case(s) have {usual}: a net takes "
            "one number of channels (an RGB image among grey ones? set drop_alpha, or convert the images)",
            odd,
        )
    shapes = {tuple(v["shape"]) for v in info.values()}
    if len(shapes) > 1 and not fixed_size and batch_size > 1:
        a, b = sorted(shapes)[0], sorted(shapes)[-1]
        ca = next(c for c, v in info.items() if tuple(v["shape"]) == a)
        cb = next(c for c, v in info.items() if tuple(v["shape"]) == b)
        raise DataError(
            by_id[cb].image_paths[0],
            f"cases have {len(shapes)} different sizes ({ca}: {'x'.join(map(str, a))}, {cb}: "
            f"{'x'.join(map(str, b))}) and the preprocessing keeps them, but batches hold {batch_size} cases: set "
            "data.preprocess.target_size or crop_or_pad, data.augment.patch_size, or train.batch_size: 1",
            cb,
        )
