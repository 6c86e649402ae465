"""Weak localisation from attention maps (seed 003, appendix "Weakly Supervised Object Localisation").

The appendix's heuristic, with no box labels and no backpropagation: "(1) blur the attention maps, (2) threshold
the low activations, (3) perform connected-component analysis, (4) select a component that overlaps at each scale
and (5) apply bounding box around the selected components." :func:`localise` does exactly these steps on the maps
an attention-gated classifier returns (``net.forward_with_attention(x)[1]``, or the maps a
:class:`~agseg.inference.predictor.Predictor` puts on the input's grid). The paper gives no blur width, threshold or
selection rule; the defaults below are our choices, stated with each parameter and checked on synthetic shapes
(``tests/inference/test_localise.py``).

Boxes are in array order on the grid the maps are brought to (``shape``: the input's pixel grid), ``start``
inclusive and ``stop`` exclusive, so that ``image[box.slices]`` is the box: in 2D ``(y0, x0, y1, x1)``.

:func:`mass_inside` and :func:`box_inside` measure how much of a map or a box falls inside a reference mask (the
lung fields of ``cxr_lungs``); :func:`measure_localisation` runs them over a dataset with masks, and
``python -m agseg.inference.localise --run RUN --data DATA --out DIR`` is its command line.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from agseg.data.preprocess import mask_box_crop

__all__ = [
    "COMBINES",
    "Box",
    "Localisation",
    "box_inside",
    "localise",
    "mass_inside",
    "measure_localisation",
]

log = logging.getLogger(__name__)

#: How the final box is drawn around the components selected at each scale.
COMBINES = ("intersection", "union")


@dataclass(frozen=True)
class Box:
    """An axis-aligned box in array order: ``start`` inclusive, ``stop`` exclusive (``image[box.slices]``)."""

    start: tuple[int, ...]
    stop: tuple[int, ...]

    @property
    def slices(self) -> tuple[slice, ...]:
        return tuple(slice(a, b) for a, b in zip(self.start, self.stop, strict=True))

    @property
    def size(self) -> int:
        """Number of pixels (voxels) in the box."""
        return int(np.prod([b - a for a, b in zip(self.start, self.stop, strict=True)]))

    def as_tuple(self) -> tuple[int, ...]:
        """``(*start, *stop)``: ``(y0, x0, y1, x1)`` in 2D."""
        return (*self.start, *self.stop)

    def iou(self, other: Box | Sequence[int]) -> float:
        """Intersection over union with another box (or a ``(*start, *stop)`` sequence); 0 for disjoint boxes."""
        o = other if isinstance(other, Box) else Box.from_tuple(other)
        lo = [max(a, b) for a, b in zip(self.start, o.start, strict=True)]
        hi = [min(a, b) for a, b in zip(self.stop, o.stop, strict=True)]
        inter = int(np.prod([max(0, h - lo_) for lo_, h in zip(lo, hi, strict=True)]))
        union = self.size + o.size - inter
        return inter / union if union else 0.0

    @classmethod
    def from_tuple(cls, values: Sequence[int]) -> Box:
        """From ``(*start, *stop)``."""
        v = [int(x) for x in values]
        if len(v) % 2:
            raise ValueError(f"a box needs as many start as stop coordinates, got {values}")
        return cls(tuple(v[: len(v) // 2]), tuple(v[len(v) // 2 :]))

    @classmethod
    def around(cls, mask: np.ndarray) -> Box | None:
        """The bounding box of the true pixels of ``mask``; None when there are none."""
        idx = np.nonzero(mask)
        if not idx[0].size:
            return None
        return cls(tuple(int(i.min()) for i in idx), tuple(int(i.max()) + 1 for i in idx))


@dataclass
class Localisation:
    """What :func:`localise` found in one image's maps.

    Attributes:
        box: the box around the selected components (see ``combine``), or None when no map has any activation.
        boxes: per map name, the box around its selected component (None where none was selected).
        components: per map name, the selected component (bool, on the grid of ``shape``).
        consistent: True when the selected components overlap at every scale (the appendix's rule held); False when
            no component overlapped one at every other scale and the strongest single component was taken instead.
        shape: the grid of the boxes.
    """

    box: Box | None
    boxes: dict[str, Box | None]
    components: dict[str, np.ndarray] = field(repr=False)
    consistent: bool
    shape: tuple[int, ...]


def _as_numpy(a: Any) -> np.ndarray:
    if hasattr(a, "detach"):
        a = a.detach().float().cpu().numpy()
    return np.asarray(a, dtype=np.float32)


def _resample(a: np.ndarray, shape: Sequence[int]) -> np.ndarray:
    """Linear resampling of one map to ``shape`` (as :func:`agseg.layers.resize_to`: half-pixel centres)."""
    if tuple(a.shape) == tuple(shape):
        return a
    import torch

    from agseg.layers import resize_to

    return resize_to(torch.from_numpy(a)[None, None], shape)[0, 0].numpy()


def _prepare(maps: Mapping[str, Any], shape: Sequence[int] | None, spatial_dims: int) -> dict[str, np.ndarray]:
    out: dict[str, np.ndarray] = {}
    for name, m in maps.items():
        a = _as_numpy(m)
        if a.ndim == spatial_dims + 1:  # (heads, *S): the mean over the heads
            a = a.mean(0)
        if a.ndim != spatial_dims:
            raise ValueError(
                f"map {name!r} has shape {a.shape}: expected ({', '.join('HW' if spatial_dims == 2 else 'DHW')}) or "
                "(heads, ...) for one image"
            )
        out[name] = a
    if shape is None:
        shapes = {a.shape for a in out.values()}
        if len(shapes) > 1:
            raise ValueError(f"the maps lie on different grids {sorted(shapes)}: give shape= (the input's grid)")
        shape = next(iter(shapes))
    return {k: _resample(v, shape) for k, v in out.items()}


def localise(
    maps: Mapping[str, Any],
    shape: Sequence[int] | None = None,
    *,
    blur: float = 0.03,
    threshold: float = 0.5,
    combine: str = "intersection",
    spatial_dims: int = 2,
) -> Localisation | list[Localisation]:
    """Boxes from attention maps, by the heuristic of seed 003's appendix.

    Steps, per map (one per gate / scale): (0) resample it linearly to ``shape``; (1) blur it with a Gaussian of
    standard deviation ``blur`` times the side of ``shape`` along each axis; (2) rescale it to [0, 1] (min-max) and
    keep the pixels above ``threshold``; (3) label the connected components (full connectivity); (4) select one
    component per map so that the selected components overlap across the scales: every component of every map is a
    candidate, joined by the component of each other map that overlaps it with the largest attention mass; of the
    candidates that found an overlapping component in every map, the one with the largest total mass (sum of the
    blurred, rescaled map over its components) wins. When none does, the component with the largest mass alone is
    taken (``consistent=False``). (5) The box is drawn around the intersection of the selected components
    (``combine="intersection"``, the default; the union where the intersection is empty) or around their union
    (``"union"``). The appendix says "around the selected components"; we take the region every scale agrees on,
    because the coarsest gate's map (1/8 of the input) outlines an object only roughly (seed 003 sec. 3.5: coarse
    gates give "a rough outline ... gradually refined at finer resolutions"): on the synthetic shapes of the tests the
    union's boxes are two to four times too large (IoU below 0.3), the intersection's fit (IoU about 0.7).

    Args:
        maps: gate name -> attention map of one image, ``(*S)`` or ``(heads, *S)`` (heads averaged), numpy or torch,
            or of a batch ``(B, heads, *S)`` (then a list, one :class:`Localisation` per image). Maps in [0, 1] as
            ``forward_with_attention`` gives them; any range works (step 2 rescales).
        shape: the grid of the boxes, e.g. the input's spatial shape ``x.shape[2:]``; default the maps' common grid.
        blur: Gaussian sigma as a fraction of each side (0.03: about 15 pixels on 512 x 512); 0 for no blur.
        threshold: the share of each blurred map's range below which activations are "low" (0.5).
        combine: ``"intersection"`` (default) or ``"union"`` (see step 5).
        spatial_dims: 2 or 3.

    Returns:
        A :class:`Localisation` (a list of them for batched maps).

    Raises:
        ValueError: no maps, maps of the wrong rank, maps on different grids without ``shape``, or a bad parameter.
    """
    if not maps:
        raise ValueError("no attention maps to localise from (a net without gates returns none)")
    if combine not in COMBINES:
        raise ValueError(f"unknown combine {combine!r}; valid: {', '.join(COMBINES)}")
    if not 0.0 <= threshold < 1.0:
        raise ValueError(f"threshold must be in [0, 1), got {threshold}")
    if blur < 0:
        raise ValueError(f"blur must be >= 0, got {blur}")
    first = _as_numpy(next(iter(maps.values())))
    if first.ndim == spatial_dims + 2:  # a batch
        arrays = {k: _as_numpy(v) for k, v in maps.items()}
        n = {a.shape[0] for a in arrays.values()}
        if len(n) != 1:
            raise ValueError(f"batched maps disagree on the batch size: {sorted(n)}")
        return [
            _localise_one({k: a[i] for k, a in arrays.items()}, shape, blur, threshold, combine, spatial_dims)
            for i in range(n.pop())
        ]
    return _localise_one(maps, shape, blur, threshold, combine, spatial_dims)


def _localise_one(
    maps: Mapping[str, Any],
    shape: Sequence[int] | None,
    blur: float,
    threshold: float,
    combine: str,
    spatial_dims: int,
) -> Localisation:
    from scipy import ndimage

    grids = _prepare(maps, shape, spatial_dims)
    names = list(grids)
    grid = next(iter(grids.values())).shape
    labelled: dict[str, tuple[np.ndarray, int]] = {}
    masses: dict[str, np.ndarray] = {}
    for name, a in grids.items():
        if blur > 0:
            a = ndimage.gaussian_filter(a, sigma=[blur * s for s in grid], mode="nearest")
        lo, hi = float(a.min()), float(a.max())
        if not hi > lo:  # a flat map: nothing stands out
            labelled[name], masses[name] = (np.zeros(grid, np.int32), 0), np.zeros(1)
            continue
        a = (a - lo) / (hi - lo)
        lab, n = ndimage.label(a > threshold, structure=np.ones((3,) * spatial_dims))
        labelled[name] = (lab, n)
        masses[name] = np.asarray(ndimage.sum_labels(a, lab, index=np.arange(n + 1)), dtype=np.float64)
    # (4) candidates: each component joined by the heaviest overlapping component of every other map
    best: tuple[bool, float, dict[str, int]] | None = None
    for name in names:
        lab, n = labelled[name]
        for c in range(1, n + 1):
            comp = lab == c
            chosen, total, complete = {name: c}, float(masses[name][c]), True
            for other in names:
                if other == name:
                    continue
                olab, _ = labelled[other]
                hits = np.unique(olab[comp])
                hits = hits[hits > 0]
                if not hits.size:
                    complete = False
                    continue
                pick = int(hits[np.argmax(masses[other][hits])])
                chosen[other] = pick
                total += float(masses[other][pick])
            if not complete:  # only the component itself counts for the fallback
                chosen, total = {name: c}, float(masses[name][c])
            key = (complete, total, chosen)
            if best is None or (key[0], key[1]) > (best[0], best[1]):
                best = key
    if best is None:
        return Localisation(None, dict.fromkeys(names), {}, False, tuple(grid))
    consistent, _, chosen = best
    components = {k: labelled[k][0] == c for k, c in chosen.items()}
    boxes = {k: (Box.around(components[k]) if k in components else None) for k in names}
    union = np.logical_or.reduce(list(components.values()))
    final = union
    if combine == "intersection" and len(components) > 1:
        inter = np.logical_and.reduce(list(components.values()))
        final = inter if inter.any() else union
    return Localisation(Box.around(final), boxes, components, bool(consistent and len(names) > 0), tuple(grid))


# ------------------------------------------------------------------------------------ measuring against masks
def mass_inside(attention: Any, mask: Any) -> float:
    """The share of an attention map's mass that falls inside ``mask`` (same grid): ``sum(a * mask) / sum(a)``.

    NaN for a map without mass (all zero).
    """
    a = _as_numpy(attention)
    m = np.asarray(mask, dtype=bool)
    if a.shape != m.shape:
        raise ValueError(f"attention map {a.shape} and mask {m.shape} lie on different grids")
    total = float(a.sum())
    return float((a * m).sum()) / total if total > 0 else float("nan")


def box_inside(box: Box | Sequence[int] | None, mask: Any) -> float:
    """The share of a box's pixels that lie inside ``mask``; NaN for no box."""
    if box is None:
        return float("nan")
    b = box if isinstance(box, Box) else Box.from_tuple(box)
    m = np.asarray(mask, dtype=bool)
    return float(m[b.slices].mean()) if b.size else float("nan")


def measure_localisation(
    source: str | Path,
    data: str | Path,
    out: str | Path | None = None,
    *,
    layout: str | None = None,
    limit: int | None = None,
    threshold: float = 0.5,
    blur: float = 0.03,
    device: str = "auto",
    amp: str = "auto",
    **options: Any,
) -> dict[str, Any]:
    """How much of a gated classifier's attention and of its boxes falls inside reference masks, per class.

    For every case of ``data`` that has a mask (label > 0 counts as inside) and a class: the model's attention maps
    on the image's grid (:class:`~agseg.inference.predictor.Predictor`), the share of each gate's mass inside the
    mask (:func:`mass_inside`), the box of :func:`localise` and the share of its pixels inside the mask
    (:func:`box_inside`), and whether the box's centre lies inside. The cases' classes come from the layout
    (``class`` column, folders, ``class_pattern``).

    Args:
        source: a training run, bundle folder or shipped model folder (``agseg.inference.pretrained.pretrained_path``),
            or a CV folder (then each case is predicted by the fold that tested it, if ``splits.json`` names one).
        data: the dataset with masks (e.g. ``../shared/data/cxr_lungs``).
        out: folder for ``localisation.csv`` (per case) and ``localisation.json`` (per class: mean, std, n); None
            writes nothing.
        layout, options: for :func:`agseg.data.load_dataset` (e.g. ``class_pattern=r"_(\\d)$"``).
        limit: only the first cases (a quick look).
        threshold, blur: as :func:`localise`.
        device, amp: as the predictor's.

    Returns:
        ``{"rows": [...], "per_class": {class: {column: {"mean", "std", "n"}}}}``.
    """
    from agseg.data import load_dataset
    from agseg.inference.predictor import Predictor, cv_fold_runs

    index = load_dataset(data, layout, **options)
    cases = [c for c in index if c.target is not None and c.has_mask]
    if limit:
        cases = cases[:limit]
    if not cases:
        raise ValueError(f"{data}: no case with both a class and a mask")
    folds = cv_fold_runs(source)
    by_case: dict[str, Path] = {}
    if folds:
        import json

        splits = Path(source) / "splits.json"
        if splits.is_file():
            for f in json.loads(splits.read_text(encoding="utf-8"))["folds"]:
                for cid in f["test"]:
                    by_case.setdefault(cid, Path(source) / f"repeat{f['repeat']}_fold{f['fold']}")
    predictors: dict[Path, Predictor] = {}

    def predictor_for(case_id: str) -> Predictor:
        src = by_case.get(case_id, Path(source))
        if src not in predictors:
            predictors[src] = Predictor.from_path(src, device=device, amp=amp)
        return predictors[src]

    rows = []
    for ref in cases:
        case = ref.load()
        pred = predictor_for(ref.case_id)
        p = pred.predict_known_case(case.image.astype(np.float32), case.geometry, case.label, attention=True)
        if not p.attention:
            raise ValueError(f"{source}: the model returns no attention maps (a net without gates)")
        mask = np.asarray(case.label) > 0
        loc = localise(p.attention, mask.shape, blur=blur, threshold=threshold)
        row: dict[str, Any] = {"case_id": ref.case_id, "target": int(ref.target), "predicted": int(p.label)}
        for name, a in p.attention.items():
            row[f"mass_inside_{name}"] = mass_inside(np.asarray(a).mean(0), mask)
        row["box_inside"] = box_inside(loc.box, mask)
        if loc.box is not None:
            centre = tuple((a + b - 1) // 2 for a, b in zip(loc.box.start, loc.box.stop, strict=True))
            row["box_centre_inside"] = float(mask[centre])
            row.update(dict(zip(("y0", "x0", "y1", "x1"), loc.box.as_tuple(), strict=False)))
        else:
            row["box_centre_inside"] = float("nan")
        # the share a uniform map would have inside: of the image, or of the crop a crop_to_mask model sees
        margin = pred.pre.config.crop_to_mask
        crop = [[0, 0]] * mask.ndim if margin is None else mask_box_crop(mask, margin)
        seen = mask[tuple(slice(b, n - e) for (b, e), n in zip(crop, mask.shape, strict=True))]
        row["mask_share"] = float(seen.mean())
        rows.append(row)
    columns = sorted({k for r in rows for k in r if k.startswith(("mass_inside", "box_", "mask_share"))})
    per_class: dict[str, dict[str, dict[str, float | int]]] = {}
    for t in sorted({r["target"] for r in rows}):
        sub = [r for r in rows if r["target"] == t]
        stats: dict[str, dict[str, float | int]] = {}
        for c in columns:
            v = np.asarray([r.get(c, np.nan) for r in sub], dtype=float)
            v = v[np.isfinite(v)]
            stats[c] = {
                "mean": float(v.mean()) if v.size else float("nan"),
                "std": float(v.std(ddof=1)) if v.size > 1 else float("nan"),
                "n": int(v.size),
            }
        per_class[str(t)] = stats
    result = {"source": str(source), "data": str(data), "n_cases": len(rows), "per_class": per_class, "rows": rows}
    if out is not None:
        from agseg.metrics import write_csv
        from agseg.metrics.table import _json_safe

        out_dir = Path(out)
        out_dir.mkdir(parents=True, exist_ok=True)
        write_csv(rows, out_dir / "localisation.csv")
        import json

        from agseg.fileio import atomic_write_text

        summary = {k: v for k, v in result.items() if k != "rows"}
        atomic_write_text(out_dir / "localisation.json", json.dumps(_json_safe(summary), indent=2) + "\n")
    return result


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m agseg.inference.localise --run RUN --data DATA --out DIR [--class-pattern '_(\\d)$']``."""
    ap = argparse.ArgumentParser(
        prog="python -m agseg.inference.localise", description=measure_localisation.__doc__.splitlines()[0]
    )
    ap.add_argument("--run", required=True, help="a training run, CV folder or model bundle folder")
    ap.add_argument("--model", action="store_true", help="--run names a shipped model (agseg predict --model)")
    ap.add_argument("--data", required=True, help="a dataset with masks and classes (e.g. ../shared/data/cxr_lungs)")
    ap.add_argument("--out", required=True, help="folder for localisation.csv and localisation.json")
    ap.add_argument("--class-pattern", default=None, help=r"regex on the case id giving its class, e.g. '_(\d)$'")
    ap.add_argument("--layout", default=None)
    ap.add_argument("--limit", type=int, default=None)
    ap.add_argument("--threshold", type=float, default=0.5)
    ap.add_argument("--blur", type=float, default=0.03)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--amp", default="auto")
    args = ap.parse_args(argv)
    source: str | Path = args.run
    if args.model:
        from agseg.inference.pretrained import pretrained_path

        source = pretrained_path(args.run)
    opts = {"class_pattern": args.class_pattern} if args.class_pattern else {}
    res = measure_localisation(
        source, args.data, args.out, layout=args.layout, limit=args.limit, threshold=args.threshold, blur=args.blur,
        device=args.device, amp=args.amp, **opts,
    )  # fmt: skip
    for cls, stats in res["per_class"].items():
        parts = [f"{k} {v['mean']:.3f}" for k, v in stats.items()]
        sys.stdout.write(f"class {cls} (n={next(iter(stats.values()))['n']}): " + ", ".join(parts) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
