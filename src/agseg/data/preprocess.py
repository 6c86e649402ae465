"""Preprocessing that prediction can undo exactly.

Pipeline of :meth:`Preprocessor.apply` (each step optional, one code path for 2D and 3D):

1. mask rules: ``mask_threshold`` then ``label_map`` (when the masks were not already mapped by the dataset layout);
2. resample to ``target_spacing`` (array order ``(z, y, x)``; a number means isotropic);
3. resize to ``target_size`` (thesis: 512 x 512 for chest X-rays, 128^3 for LUNA16 CT); with ``keep_aspect`` the
   image is scaled uniformly to fit and padded to ``target_size``;
4. intensity: ``zscore_case`` (per case and channel), ``zscore_global`` (dataset mean/std from :meth:`fit`,
   thesis), ``minmax01`` (per case to [0, 1], seed 004), ``ct_window`` (clip to ``window`` and scale to [0, 1]) or
   ``none``;
5. centre crop/pad to ``crop_or_pad`` (padding with 0 after normalisation).

Images are interpolated linearly (anti-aliased when a 2D image shrinks), masks with nearest neighbour, so labels stay
labels. Each call returns a :class:`PreprocessRecord`: the original :class:`~agseg.data.io.Geometry`, every step with
its sizes, and the intensity parameters. It is JSON/YAML-safe (``to_dict``/``from_dict``) and :func:`invert` maps a
predicted label map (nearest) or probability map (linear) back onto the original grid with the original geometry.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from agseg.data.cases import Case, CaseRef
from agseg.data.io import Geometry
from agseg.data.labels import MaskSpec

log = logging.getLogger(__name__)

INTENSITY_MODES = ("none", "zscore_case", "zscore_global", "minmax01", "ct_window")
RECORD_VERSION = 1


def _tuple(v: Any, typ: type) -> tuple | None:
    if v is None:
        return None
    if isinstance(v, int | float):
        return (typ(v),)
    return tuple(typ(x) for x in v)


@dataclass(frozen=True)
class PreprocessConfig:
    """Preprocessing settings (frozen; YAML/JSON via :meth:`to_dict` / :meth:`from_dict`).

    All sizes and spacings are in **array order** ``(y, x)`` / ``(z, y, x)``.

    Attributes:
        target_spacing: Resample to this spacing first (a single number: isotropic, any dimension). ``None``: keep.
        target_size: Then resize to this grid, e.g. ``(512, 512)`` or ``(128, 128, 128)``. ``None``: keep.
        keep_aspect: With ``target_size``: scale uniformly to fit inside it and pad the rest (no distortion).
        crop_or_pad: Finally centre-crop/pad to this size (e.g. a patch size). ``None``: keep.
        intensity: One of ``"none"``, ``"zscore_case"``, ``"zscore_global"``, ``"minmax01"``, ``"ct_window"``.
        window: ``(lo, hi)`` for ``"ct_window"`` (e.g. lung ``(-1000, 400)``; ``(0, 255)`` = fixed /255 scaling).
        label_map: ``{raw value: label}`` applied to masks (values not listed, except 0, are an error).
        mask_threshold: ``mask > threshold`` -> 1, before ``label_map``.
        antialias: Low-pass 2D images before shrinking (torch's antialiased bilinear).
        global_stats: Where ``zscore_global`` takes its mean and std: ``"original"`` (all voxels of the original
            images, so a case weighs by its voxel count) or ``"working"`` (each case on the working grid, after
            ``target_spacing`` / ``target_size``, before ``crop_or_pad``, every case weighing the same: the thesis,
            "the global mean and standard deviation of the resampled dataset").
        crop_to_mask: Before everything else, crop each image to the bounding box of its mask's foreground, widened
            by this fraction of the image's size on every side (``0.05``: 5 %), e.g. a chest X-ray to its lung
            fields for a classifier, then resized to ``target_size`` (required). The case must have a mask; one with an
            empty mask is kept whole. ``None``: off.
    """

    target_spacing: tuple[float, ...] | None = None
    target_size: tuple[int, ...] | None = None
    keep_aspect: bool = False
    crop_or_pad: tuple[int, ...] | None = None
    intensity: str = "zscore_case"
    window: tuple[float, float] | None = None
    label_map: Mapping[int, int] | None = None
    mask_threshold: float | None = None
    antialias: bool = True
    global_stats: str = "original"
    crop_to_mask: float | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "target_spacing", _tuple(self.target_spacing, float))
        object.__setattr__(self, "target_size", _tuple(self.target_size, int))
        object.__setattr__(self, "crop_or_pad", _tuple(self.crop_or_pad, int))
        object.__setattr__(self, "window", _tuple(self.window, float))
        if self.label_map is not None:
            object.__setattr__(self, "label_map", {int(k): int(v) for k, v in dict(self.label_map).items()})
        if self.intensity not in INTENSITY_MODES:
            raise ValueError(f"intensity must be one of {INTENSITY_MODES}, got {self.intensity!r}")
        if self.global_stats not in ("original", "working"):
            raise ValueError(f"global_stats must be 'original' or 'working', got {self.global_stats!r}")
        if self.intensity == "ct_window" and (self.window is None or len(self.window) != 2):
            raise ValueError("intensity='ct_window' needs window=(lo, hi)")
        if self.window is not None and self.window[1] <= self.window[0]:
            raise ValueError(f"window must be (lo, hi) with lo < hi, got {self.window}")
        if self.crop_to_mask is not None and not 0 <= self.crop_to_mask < 1:
            raise ValueError(f"crop_to_mask must be a margin in [0, 1), got {self.crop_to_mask}")
        if self.crop_to_mask is not None and self.target_size is None:
            raise ValueError("crop_to_mask needs target_size (the crops differ in size; they are resized to it)")
        if self.keep_aspect and self.target_size is None:
            raise ValueError("keep_aspect needs target_size")
        for name in ("target_size", "crop_or_pad"):
            v = getattr(self, name)
            if v is not None and (len(v) not in (2, 3) or min(v) < 1):
                raise ValueError(f"{name} must have 2 or 3 positive sizes, got {v}")
        if self.target_spacing is not None and min(self.target_spacing) <= 0:
            raise ValueError(f"target_spacing must be positive, got {self.target_spacing}")

    def to_dict(self) -> dict[str, Any]:
        """JSON/YAML-safe dict (``global_stats`` and ``crop_to_mask`` only when not the default, so older cache keys
        still match)."""
        d = asdict(self)
        if d["global_stats"] == "original":
            del d["global_stats"]
        if d["crop_to_mask"] is None:
            del d["crop_to_mask"]
        for k, v in d.items():
            if isinstance(v, tuple):
                d[k] = list(v)
        if self.label_map is not None:
            d["label_map"] = {int(k): int(v) for k, v in self.label_map.items()}
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> PreprocessConfig:
        """Inverse of :meth:`to_dict` (JSON string keys of ``label_map`` are accepted)."""
        return cls(**dict(d))


# -------------------------------------------------------------------------------------------------------- record
@dataclass
class PreprocessRecord:
    """What was done to one case: enough to undo it (see :func:`invert`).

    Attributes:
        original: Geometry of the input (its ``shape`` is the original spatial shape).
        geometry: Geometry of the preprocessed array (spacing/origin follow the resampling, cropping, padding).
        steps: Spatial steps in order: ``{"op": "resize", "in_shape", "out_shape"}`` and
            ``{"op": "crop_pad", "crop": [[before, after], ...], "pad": [[before, after], ...]}``.
        intensity: ``{"mode", "mean", "std", "min", "max", "window"}`` (per channel lists where relevant).
        config: The :class:`PreprocessConfig` as a dict.
        version: Record format version.
    """

    original: Geometry
    geometry: Geometry
    steps: list[dict[str, Any]] = field(default_factory=list)
    intensity: dict[str, Any] = field(default_factory=dict)
    config: dict[str, Any] = field(default_factory=dict)
    version: int = RECORD_VERSION

    def to_dict(self) -> dict[str, Any]:
        """JSON/YAML-safe dict."""
        return {
            "version": self.version,
            "original": self.original.to_dict(),
            "geometry": self.geometry.to_dict(),
            "steps": json.loads(json.dumps(self.steps)),
            "intensity": json.loads(json.dumps(self.intensity)),
            "config": json.loads(json.dumps(self.config)),
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> PreprocessRecord:
        """Inverse of :meth:`to_dict`."""
        if int(d.get("version", 1)) > RECORD_VERSION:
            raise ValueError(f"preprocessing record version {d['version']} is newer than this agseg ({RECORD_VERSION})")
        return cls(
            original=Geometry.from_dict(d["original"]),
            geometry=Geometry.from_dict(d["geometry"]),
            steps=[dict(s) for s in d.get("steps", [])],
            intensity=dict(d.get("intensity", {})),
            config=dict(d.get("config", {})),
            version=int(d.get("version", RECORD_VERSION)),
        )


@dataclass
class PreprocessResult:
    """Output of :meth:`Preprocessor.apply`.

    Attributes:
        image: ``(C, *spatial)`` float32.
        label: ``(*spatial)`` integer labels, or ``None``.
        record: How to undo it.
    """

    image: np.ndarray
    label: np.ndarray | None
    record: PreprocessRecord


# ------------------------------------------------------------------------------------------------ spatial helpers
_LINEAR = {1: "linear", 2: "bilinear", 3: "trilinear"}


def resize_array(array: np.ndarray, out_shape: Sequence[int], *, label: bool, antialias: bool = False) -> np.ndarray:
    """Resize the spatial axes of ``array`` to ``out_shape`` (half-pixel aligned, extent preserved).

    Args:
        array: ``(C, *spatial)`` (or ``(*spatial)`` when ``label``).
        out_shape: New spatial shape.
        label: Nearest neighbour (labels stay labels; dtype kept) instead of linear interpolation (float32).
        antialias: Low-pass before shrinking (2D linear only).

    Returns:
        The resized array.
    """
    out_shape = tuple(int(s) for s in out_shape)
    squeeze = array.ndim == len(out_shape)
    a = array[None] if squeeze else array
    if tuple(a.shape[1:]) == out_shape:
        return array
    t = torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32))[None]
    if label:
        r = F.interpolate(t, size=out_shape, mode="nearest-exact")[0].numpy()
        r = np.rint(r).astype(array.dtype)
    else:
        nd = len(out_shape)
        shrink = any(o < i for o, i in zip(out_shape, a.shape[1:], strict=True))
        aa = antialias and nd == 2 and shrink
        r = F.interpolate(t, size=out_shape, mode=_LINEAR[nd], align_corners=False, antialias=aa)[0].numpy()
    return r[0] if squeeze else r


def _resized_geometry(g: Geometry, out_shape: Sequence[int]) -> Geometry:
    old = np.asarray(g.shape, float)[::-1]  # ITK order
    new = np.asarray(out_shape, float)[::-1]
    sp_old = np.asarray(g.spacing)
    sp_new = sp_old * old / new
    origin = np.asarray(g.origin) + g.direction_matrix @ (0.5 * (sp_new - sp_old))
    return g.replace(spacing=tuple(sp_new), origin=tuple(origin), shape=tuple(out_shape))


def _crop_pad_amounts(shape: Sequence[int], target: Sequence[int]) -> tuple[list[list[int]], list[list[int]]]:
    crop, pad = [], []
    for s, t in zip(shape, target, strict=True):
        c = max(s - t, 0)
        p = max(t - s, 0)
        crop.append([c // 2, c - c // 2])
        pad.append([p // 2, p - p // 2])
    return crop, pad


def _apply_crop_pad(a: np.ndarray, crop: list[list[int]], pad: list[list[int]], fill: float = 0) -> np.ndarray:
    """``a`` is ``(..., *spatial)``; crop and pad act on the last ``len(crop)`` axes."""
    lead = a.ndim - len(crop)
    sl = (slice(None),) * lead + tuple(slice(b, a.shape[lead + i] - e) for i, (b, e) in enumerate(crop))
    a = a[sl]
    if any(b or e for b, e in pad):
        a = np.pad(a, [(0, 0)] * lead + [tuple(p) for p in pad], mode="constant", constant_values=fill)
    return np.ascontiguousarray(a)


def mask_box_crop(mask: np.ndarray, margin: float) -> list[list[int]]:
    """Crop amounts ``[[before, after], ...]`` per axis that keep the bounding box of ``mask > 0`` widened by
    ``margin`` times the axis' size on each side (clipped to the array); all zeros for an empty mask."""
    nz = np.nonzero(np.asarray(mask) > 0)
    if not nz[0].size:
        return [[0, 0] for _ in range(mask.ndim)]
    crop = []
    for idx, size in zip(nz, mask.shape, strict=True):
        m = int(margin * size)
        crop.append([max(0, int(idx.min()) - m), max(0, size - (int(idx.max()) + 1 + m))])
    return crop


def _shift_origin(g: Geometry, voxels: Sequence[int], shape: Sequence[int]) -> Geometry:
    """Move the origin by ``voxels`` (array order; positive = towards higher indices) and set the new shape."""
    shift = np.asarray(g.spacing) * np.asarray(voxels, float)[::-1]
    origin = np.asarray(g.origin) + g.direction_matrix @ shift
    return g.replace(origin=tuple(origin), shape=tuple(shape))


# ------------------------------------------------------------------------------------------------ preprocessor
class Preprocessor:
    """Applies a :class:`PreprocessConfig` to cases and records how to undo it.

    Example:
        >>> pre = Preprocessor(PreprocessConfig(target_size=(256, 256), intensity="minmax01"))
        >>> out = pre.apply(image, geometry, mask)          # image (C, H, W), mask (H, W)
        >>> labels, geom = invert(pred, out.record)         # back on the original grid
    """

    def __init__(self, config: PreprocessConfig | None = None, stats: Mapping[str, Any] | None = None) -> None:
        """Args:
        config: Settings (default: per-case z-score only).
        stats: Fitted global intensity statistics (``{"mean": [...], "std": [...], ...}``), e.g. from a saved run.
        """
        self.config = config or PreprocessConfig()
        self.stats: dict[str, Any] | None = dict(stats) if stats else None

    def __repr__(self) -> str:
        return f"Preprocessor({self.config}, stats={self.stats})"

    # ---- fitting
    @property
    def needs_fit(self) -> bool:
        """True when :meth:`fit` must run before :meth:`apply` (global z-score without stats)."""
        return self.config.intensity == "zscore_global" and self.stats is None

    def fit(self, cases: Iterable[Case | CaseRef], *, cache: Any = None, progress: bool = False) -> Preprocessor:
        """Compute global per-channel mean/std over ``cases`` (needed by ``zscore_global``; a no-op otherwise).

        With ``global_stats="original"`` statistics are taken over all voxels of the original images (linear
        resampling keeps them, to a close approximation); with ``"working"`` per case on the resampled grid and
        averaged with equal weight per case (mean of the case means; variance from the mean of the case second
        moments). With a :class:`~agseg.data.cache.PreprocessCache`, they are stored and reused by later runs.

        Returns:
            ``self``.
        """
        if self.config.intensity != "zscore_global":
            return self
        cases = list(cases)
        key = None
        if cache is not None and all(isinstance(c, CaseRef) for c in cases):
            key = cache.stats_key(cases, extra=self._working_grid_key())
            if (hit := cache.load_json(key)) is not None:
                self.stats = hit
                return self
        s1: np.ndarray | None = None
        s2: np.ndarray | None = None
        n = 0
        it = cases
        if progress:
            from tqdm.auto import tqdm

            it = tqdm(cases, desc="fitting intensity statistics", unit="case", leave=False, disable=None)
        working = self.config.global_stats == "working"
        spatial = (
            # keep_aspect would pad to target_size: stretch instead, so that no padding enters the statistics
            Preprocessor(
                replace(
                    self.config,
                    intensity="none",
                    crop_or_pad=None,
                    keep_aspect=False,
                    label_map=None,
                    mask_threshold=None,
                )
            )
            if working
            else None
        )
        for c in it:
            case = c.load(with_mask=False) if isinstance(c, CaseRef) else c
            img = case.image
            if spatial is not None:  # the working grid: resampled / resized, as apply() would, before crop or pad
                img = spatial.apply(img, case.geometry).image
            flat = img.astype(np.float64).reshape(img.shape[0], -1)
            if s1 is None:
                s1, s2 = np.zeros(flat.shape[0]), np.zeros(flat.shape[0])
            if flat.shape[0] != s1.shape[0]:
                raise ValueError(f"case {getattr(c, 'case_id', '?')} has {flat.shape[0]} channels, not {s1.shape[0]}")
            if working:  # one weight per case: sums of the case means and second moments
                s1 += flat.mean(1)
                s2 += np.square(flat).mean(1)
                n += 1
            else:
                s1 += flat.sum(1)
                s2 += np.square(flat).sum(1)
                n += flat.shape[1]
        if s1 is None or s2 is None or n == 0:
            raise ValueError("fit() needs at least one case")
        mean = s1 / n
        std = np.sqrt(np.maximum(s2 / n - mean**2, 0.0))
        self.stats = {"mean": mean.tolist(), "std": std.tolist(), "n_cases": len(cases)}
        if working:
            self.stats["weighting"] = "case, working grid"
        else:  # as before global_stats existed, so fingerprints and cache keys do not move
            self.stats["n_voxels"] = int(n)
        if key is not None:
            cache.save_json(key, self.stats)
        return self

    def _working_grid_key(self) -> dict[str, Any] | None:
        """What the statistics depend on besides the images (``None`` for the original grid: the old cache key)."""
        if self.config.global_stats != "working":
            return None
        c = self.config
        return {"global_stats": "working", "target_spacing": c.target_spacing, "target_size": c.target_size,
                "keep_aspect": c.keep_aspect, "antialias": c.antialias}  # fmt: skip

    # ---- serialisation
    def to_dict(self) -> dict[str, Any]:
        """Config plus fitted statistics (JSON/YAML-safe); save it with a run."""
        return {"config": self.config.to_dict(), "stats": self.stats}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Preprocessor:
        return cls(PreprocessConfig.from_dict(d["config"]), d.get("stats"))

    def fingerprint(self) -> str:
        """SHA-256 of :meth:`to_dict` (part of cache keys)."""
        return hashlib.sha256(json.dumps(self.to_dict(), sort_keys=True).encode()).hexdigest()

    # ---- applying
    def apply_case(self, case: Case) -> PreprocessResult:
        """:meth:`apply` on a loaded :class:`~agseg.data.cases.Case`."""
        return self.apply(case.image, case.geometry, case.label)

    def apply(self, image: np.ndarray, geometry: Geometry, mask: np.ndarray | None = None) -> PreprocessResult:
        """Preprocess one image (and its mask).

        Args:
            image: ``(C, *spatial)`` array (any numeric dtype).
            geometry: Its geometry (``geometry.shape == spatial``).
            mask: ``(*spatial)`` labels, or ``None``.

        Returns:
            :class:`PreprocessResult` with float32 ``image`` ``(C, *spatial')``, integer ``label`` and the record.

        Raises:
            ValueError: Shapes disagree, the config's dimensionality differs from the image's, or ``zscore_global``
                without :meth:`fit`.
        """
        cfg = self.config
        nd = geometry.ndim
        if image.ndim != nd + 1 or tuple(image.shape[1:]) != geometry.shape:
            raise ValueError(f"image shape {image.shape} does not match (C, *{geometry.shape})")
        if mask is not None and tuple(mask.shape) != geometry.shape:
            raise ValueError(f"mask shape {mask.shape} differs from image spatial shape {geometry.shape}")
        for name in ("target_size", "crop_or_pad"):
            v = getattr(cfg, name)
            if v is not None and len(v) != nd:
                raise ValueError(f"{name}={v} has {len(v)} dimensions but the image has {nd}")
        if self.needs_fit:
            raise ValueError("intensity='zscore_global' needs fit(cases) (or stats) before apply()")
        if mask is not None and (cfg.mask_threshold is not None or cfg.label_map is not None):
            spec = MaskSpec(threshold=cfg.mask_threshold, label_map=cfg.label_map)
            mask = spec.apply([(mask, "<mask>")])  # type: ignore[list-item]

        img = image.astype(np.float32, copy=False)
        geom = geometry
        steps: list[dict[str, Any]] = []

        def resize(out_shape: Sequence[int], reason: str) -> None:
            nonlocal img, mask, geom
            out_shape = [max(1, int(s)) for s in out_shape]
            if list(out_shape) == list(geom.shape):
                return
            steps.append({"op": "resize", "reason": reason, "in_shape": list(geom.shape), "out_shape": out_shape})
            img = resize_array(img, out_shape, label=False, antialias=cfg.antialias)
            if mask is not None:
                mask = resize_array(mask, out_shape, label=True)
            geom = _resized_geometry(geom, out_shape)

        def crop_pad(target: Sequence[int], reason: str) -> None:
            nonlocal img, mask, geom
            crop, pad = _crop_pad_amounts(geom.shape, target)
            if not any(b or e for b, e in crop + pad):
                return
            steps.append({"op": "crop_pad", "reason": reason, "in_shape": list(geom.shape), "crop": crop, "pad": pad})
            img = _apply_crop_pad(img, crop, pad)
            if mask is not None:
                mask = _apply_crop_pad(mask, crop, pad)
            shift = [c[0] - p[0] for c, p in zip(crop, pad, strict=True)]
            geom = _shift_origin(geom, shift, img.shape[1:])

        if cfg.crop_to_mask is not None:
            if mask is None:
                raise ValueError(
                    "preprocess.crop_to_mask crops each image to its mask, and this image has none (a model trained "
                    "this way needs the mask of every image it is given)"
                )
            crop = mask_box_crop(mask, cfg.crop_to_mask)
            if any(b or e for b, e in crop):
                steps.append(
                    {
                        "op": "crop_pad",
                        "reason": "crop_to_mask",
                        "in_shape": list(geom.shape),
                        "crop": crop,
                        "pad": [[0, 0]] * nd,
                    }
                )
                img = _apply_crop_pad(img, crop, [[0, 0]] * nd)
                mask = _apply_crop_pad(mask, crop, [[0, 0]] * nd)
                geom = _shift_origin(geom, [b for b, _ in crop], img.shape[1:])
        if cfg.target_spacing is not None:
            ts = cfg.target_spacing * nd if len(cfg.target_spacing) == 1 else cfg.target_spacing
            if len(ts) != nd:
                raise ValueError(f"target_spacing={cfg.target_spacing} has {len(ts)} values but the image is {nd}D")
            sp = np.asarray(geom.array_spacing)
            resize(np.round(np.asarray(geom.shape) * sp / np.asarray(ts)), "target_spacing")
        if cfg.target_size is not None:
            if cfg.keep_aspect:
                scale = min(t / s for t, s in zip(cfg.target_size, geom.shape, strict=True))
                resize(
                    [min(t, round(s * scale)) for t, s in zip(cfg.target_size, geom.shape, strict=True)], "keep_aspect"
                )
            else:
                resize(cfg.target_size, "target_size")
        img, intensity = self._intensity(img)
        if cfg.target_size is not None and cfg.keep_aspect:
            crop_pad(cfg.target_size, "keep_aspect")
        if cfg.crop_or_pad is not None:
            crop_pad(cfg.crop_or_pad, "crop_or_pad")
        record = PreprocessRecord(
            original=geometry,
            geometry=geom.replace(dtype="float32", n_channels=img.shape[0]),
            steps=steps,
            intensity=intensity,
            config=cfg.to_dict(),
        )
        return PreprocessResult(np.ascontiguousarray(img, dtype=np.float32), mask, record)

    def _intensity(self, img: np.ndarray) -> tuple[np.ndarray, dict[str, Any]]:
        mode = self.config.intensity
        info: dict[str, Any] = {"mode": mode}
        if mode == "none":
            return img, info
        flat = img.reshape(img.shape[0], -1)
        if mode == "ct_window":
            lo, hi = self.config.window  # type: ignore[misc]
            info["window"] = [lo, hi]
            return ((np.clip(img, lo, hi) - lo) / (hi - lo)).astype(np.float32), info
        if mode == "minmax01":
            lo, hi = flat.min(1), flat.max(1)
            info.update(min=lo.tolist(), max=hi.tolist())
            scale = np.where(hi > lo, hi - lo, 1.0)
            return ((img - _bc(lo, img)) / _bc(scale, img)).astype(np.float32), info
        if mode == "zscore_case":
            mean, std = flat.mean(1, dtype=np.float64), flat.std(1, dtype=np.float64)
        else:
            assert self.stats is not None
            mean, std = np.asarray(self.stats["mean"], float), np.asarray(self.stats["std"], float)
            if mean.shape[0] != img.shape[0]:
                raise ValueError(f"global statistics have {mean.shape[0]} channels, the image {img.shape[0]}")
        std = np.where(std > 1e-8, std, 1.0)
        info.update(mean=mean.tolist(), std=std.tolist())
        return ((img - _bc(mean, img)) / _bc(std, img)).astype(np.float32), info


def _bc(v: np.ndarray, img: np.ndarray) -> np.ndarray:
    return np.asarray(v, dtype=np.float32).reshape((-1,) + (1,) * (img.ndim - 1))


# ------------------------------------------------------------------------------------------------------- invert
def invert(
    array: np.ndarray | torch.Tensor,
    record: PreprocessRecord | Mapping[str, Any],
    *,
    kind: str = "auto",
    fill: float = 0.0,
) -> tuple[np.ndarray, Geometry]:
    """Map a prediction on the preprocessed grid back to the original grid and geometry.

    Args:
        array: Label map ``(*spatial)`` or probabilities/logits ``(C, *spatial)`` on the preprocessed grid.
        record: The :class:`PreprocessRecord` of the case (or its dict).
        kind: ``"label"`` (nearest neighbour, dtype kept), ``"prob"`` (linear), or ``"auto"``: integer/bool arrays
            are labels, float arrays probabilities.
        fill: Value for regions that preprocessing cropped away (background / probability 0).

    Returns:
        ``(array, geometry)`` with ``array`` of the original spatial shape and ``geometry`` the original geometry
        (``n_channels`` set to the array's channels, ``dtype`` to its dtype), ready for
        :func:`~agseg.data.io.write_image`.
    """
    rec = record if isinstance(record, PreprocessRecord) else PreprocessRecord.from_dict(record)
    a = array.detach().cpu().numpy() if isinstance(array, torch.Tensor) else np.asarray(array)
    is_label = a.dtype.kind in "biu" if kind == "auto" else kind == "label"
    if kind not in ("auto", "label", "prob"):
        raise ValueError(f"kind must be 'auto', 'label' or 'prob', got {kind!r}")
    nd = rec.original.ndim
    if a.dtype == bool:
        a = a.astype(np.uint8)
    if tuple(a.shape[-nd:]) != rec.geometry.shape or a.ndim not in (nd, nd + 1):
        raise ValueError(f"array shape {a.shape} does not match the preprocessed grid {rec.geometry.shape}")
    if not is_label:
        a = a.astype(np.float32, copy=False)
    for step in reversed(rec.steps):
        if step["op"] == "crop_pad":
            # undo the padding (crop it off), then undo the crop (pad with fill)
            a = _apply_crop_pad(a, step["pad"], [[0, 0]] * nd)
            a = _apply_crop_pad(a, [[0, 0]] * nd, step["crop"], fill)
        elif step["op"] == "resize":
            a = resize_array(a, step["in_shape"], label=is_label)
        else:
            raise ValueError(f"unknown preprocessing step {step['op']!r} in record")
    if tuple(a.shape[-nd:]) != rec.original.shape:  # pragma: no cover - a record inconsistent with itself
        raise ValueError(f"inverted shape {a.shape} differs from the original {rec.original.shape}")
    n_ch = a.shape[0] if a.ndim == nd + 1 else 1
    return np.ascontiguousarray(a), rec.original.replace(n_channels=n_ch, dtype=str(a.dtype))
