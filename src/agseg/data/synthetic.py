"""Synthetic phantoms with masks, written in the real formats and layouts (for tests and the demo).

* :func:`chest_phantom`: a 2D chest-X-ray-like image (body, two lung fields, heart, spine, ribs, noise) with an
  anti-aliased lung mask, like the real ``cxr_lungs`` data.
* :func:`phantom_3d`: a 3D volume with ellipsoid structures labelled ``1..n_labels``.
* :func:`write_dataset`: a whole dataset in one of the layouts :func:`agseg.data.load_dataset` recognises
  (``cxr``, ``montgomery``, ``volumes``, ``msd``, ``luna16``, ``dsb``, ``brats``, ``dicom``).
* :func:`shape_images`: image classification with a known object: one shape per image (its kind is the class),
  drawn at a random place on noise, with its mask and bounding box (weak localisation tests, seed 003 appendix);
  :func:`write_shape_dataset` writes them as PNGs in the ``list``, ``class_folders`` or ``pattern`` layout.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from scipy import ndimage

from agseg.data.io import Geometry, write_image, write_mask

KINDS = ("cxr", "montgomery", "volumes", "msd", "luna16", "dsb", "brats", "dicom")
#: Shapes :func:`shape_images` draws; the index of a shape in ``shapes`` is its class.
SHAPES = ("none", "square", "cross", "disc", "bar")


def _rng(rng: np.random.Generator | int | None) -> np.random.Generator:
    return rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)


def _grid(shape: Sequence[int]) -> list[np.ndarray]:
    """Voxel-centre coordinates in [-1, 1] per axis (array order)."""
    axes = [(np.arange(n) + 0.5) / n * 2 - 1 for n in shape]
    return np.meshgrid(*axes, indexing="ij")


def _ellipse(y: np.ndarray, x: np.ndarray, cy: float, cx: float, ry: float, rx: float, ang: float = 0.0) -> np.ndarray:
    c, s = np.cos(ang), np.sin(ang)
    xr, yr = (x - cx) * c + (y - cy) * s, -(x - cx) * s + (y - cy) * c
    return (xr / rx) ** 2 + (yr / ry) ** 2 <= 1


def _block_mean(a: np.ndarray, f: int) -> np.ndarray:
    h, w = a.shape[0] // f, a.shape[1] // f
    return a[: h * f, : w * f].reshape(h, f, w, f).mean(axis=(1, 3))


def chest_phantom(
    size: int = 256, *, rng: np.random.Generator | int | None = None, noise: float = 0.03, split: bool = False
) -> tuple[np.ndarray, ...]:
    """A chest-X-ray-like image and its lung mask.

    Args:
        size: Image side in pixels.
        rng: Seed or generator (shapes, positions and intensities vary with it).
        noise: Standard deviation of the additive noise (image range [0, 1]).
        split: Also return separate left/right lung masks.

    Returns:
        ``(image, mask)`` (or ``(image, mask, left, right)`` with ``split``): ``image`` uint8 ``(size, size)``;
        masks uint8 ``(size, size)`` with anti-aliased edges, 0..255 (lung = ``mask > 127``, as in ``cxr_lungs``).
    """
    g = _rng(rng)
    ss = 3  # supersampling for anti-aliased edges

    def j(s: float) -> float:
        return float(g.uniform(-s, s))

    y, x = _grid((size * ss, size * ss))
    body = _ellipse(y, x, 0.05 + j(0.03), j(0.03), 0.98, 0.86 + j(0.04))
    # the patient's right lung is on the image's left
    right = _ellipse(y, x, -0.02 + j(0.04), -0.36 + j(0.03), 0.52 + j(0.05), 0.22 + j(0.03), 0.08 + j(0.05))
    left = _ellipse(y, x, -0.02 + j(0.04), 0.36 + j(0.03), 0.50 + j(0.05), 0.21 + j(0.03), -0.08 + j(0.05))
    heart = _ellipse(y, x, 0.32 + j(0.04), 0.12 + j(0.04), 0.2 + j(0.03), 0.26 + j(0.03))
    right, left = right & body & ~heart, left & body & ~heart
    img = np.full(y.shape, 0.05)
    img[body] = 0.55 + j(0.05)
    img[right | left] = 0.2 + j(0.04)
    img[heart & body] = 0.62
    img[(np.abs(x) < 0.06) & body] = 0.75
    for k in range(10):  # ribs: bright arcs
        curve = -0.8 + 0.16 * k + j(0.02) + 0.28 * x**2
        img[(np.abs(y - curve) < 0.02) & body & (np.abs(x) > 0.07)] += 0.16
    img = _block_mean(img, ss)
    img = ndimage.gaussian_filter(img, 1.0) + g.normal(0, noise, img.shape)
    image = (np.clip(img, 0, 1) * 255).round().astype(np.uint8)

    def aa(m: np.ndarray) -> np.ndarray:
        return (_block_mean(m.astype(np.float64), ss) * 255).round().astype(np.uint8)

    mask = aa(right | left)
    return (image, mask, aa(left), aa(right)) if split else (image, mask)


def phantom_3d(
    shape: Sequence[int] = (32, 48, 48),
    *,
    n_labels: int = 2,
    rng: np.random.Generator | int | None = None,
    noise: float = 10.0,
) -> tuple[np.ndarray, np.ndarray]:
    """A 3D phantom: a body ellipsoid with ``n_labels`` smaller ellipsoids inside, each its own label.

    Args:
        shape: ``(D, H, W)``.
        n_labels: Number of foreground labels (1..n).
        rng: Seed or generator.
        noise: Standard deviation of the Gaussian noise.

    Returns:
        ``(image, label)``: float32 ``(D, H, W)`` (background 0, body ~100, label k ~100 + 60 k) and uint8 labels.
    """
    g = _rng(rng)
    z, y, x = _grid(shape)
    image = np.zeros(shape, np.float32)
    label = np.zeros(shape, np.uint8)
    image[(z / 0.9) ** 2 + (y / 0.85) ** 2 + (x / 0.85) ** 2 <= 1] = 100
    for k in range(1, n_labels + 1):
        c = g.uniform(-0.4, 0.4, 3)
        r = g.uniform(0.18, 0.3, 3)
        m = ((z - c[0]) / r[0]) ** 2 + ((y - c[1]) / r[1]) ** 2 + ((x - c[2]) / r[2]) ** 2 <= 1
        label[m] = k
        image[m] = 100 + 60 * k
    image = ndimage.gaussian_filter(image, 0.7) + g.normal(0, noise, shape).astype(np.float32)
    return image.astype(np.float32), label


def _geometry(shape: Sequence[int], spacing: Sequence[float] | None, direction: Sequence[float] | None) -> Geometry:
    nd = len(shape)
    sp = tuple(spacing) if spacing is not None else (1.0,) * nd
    d = tuple(direction) if direction is not None else tuple(np.eye(nd).ravel())
    origin = tuple(-0.5 * s * n for s, n in zip(sp, tuple(shape)[::-1], strict=True))
    return Geometry(sp, origin, d, tuple(shape))


def write_dataset(
    out: str | Path,
    kind: str = "cxr",
    n: int = 4,
    *,
    seed: int = 0,
    size: int | Sequence[int] | None = None,
    fmt: str = "nii.gz",
    spacing: Sequence[float] | None = None,
    direction: Sequence[float] | None = None,
) -> Path:
    """Write a synthetic dataset in a real layout and format.

    Args:
        out: Folder to create (or fill).
        kind: ``cxr`` (``cxr/`` + ``masks/`` PNG, anti-aliased masks), ``montgomery`` (``CXR_png/`` +
            ``ManualMask/{leftMask,rightMask}/``), ``volumes`` (``images/`` + ``labels/`` in ``fmt``), ``msd``
            (``dataset.json`` + ``imagesTr/`` + ``labelsTr/``), ``luna16`` (``subset0/*.mhd`` + ``seg-lungs-LUNA16/``,
            lungs 3/4, trachea 5), ``dsb`` (``stage1_train/ID/images/ID.png`` RGBA + one mask per nucleus),
            ``brats`` (``train/CASE/{Flair,T1c}_subtrMeanDivStd, brainmask, OTMultiClass .nii.gz``), ``dicom``
            (``images/CASE/`` DICOM series + ``labels/CASE.nii.gz``).
        n: Number of cases.
        seed: Random seed (the same seed writes the same data).
        size: 2D side (default 256 for chest, 128 for nuclei) or 3D shape ``(D, H, W)`` (default (24, 40, 40)).
        fmt: File ending for ``volumes`` (``nii.gz``, ``nii``, ``mha``, ``mhd``, ``nrrd``).
        spacing: Voxel spacing, ITK order ``(x, y, z)``, for 3D kinds.
        direction: Direction cosines (row-major 3x3) for 3D kinds.

    Returns:
        ``out``.
    """
    if kind not in KINDS:
        raise ValueError(f"unknown kind {kind!r}; one of {', '.join(KINDS)}")
    root = Path(out)
    root.mkdir(parents=True, exist_ok=True)
    g = np.random.default_rng(seed)
    shape3 = tuple(size) if isinstance(size, Sequence) else (24, 40, 40)
    ext = "." + fmt.lstrip(".")

    if kind in ("cxr", "montgomery"):
        side = int(size) if isinstance(size, int) else 256
        for i in range(n):
            image, mask, left, right = chest_phantom(side, rng=g, split=True)
            geom = Geometry.identity(image.shape, format="png", dtype="uint8")
            if kind == "cxr":
                name = f"SYNCXR_{i:04d}_{i % 2}.png"
                write_image(root / "cxr" / name, image, geom)
                write_image(root / "masks" / name, mask, geom)
            else:
                name = f"MCUCXR_{i:04d}_{i % 2}.png"
                write_image(root / "CXR_png" / name, image, geom)
                write_image(root / "ManualMask" / "leftMask" / name, left, geom)
                write_image(root / "ManualMask" / "rightMask" / name, right, geom)
        return root

    if kind == "dsb":
        side = int(size) if isinstance(size, int) else 128
        for i in range(n):
            cid = f"{i:04d}" + "".join(g.choice(list("0123456789abcdef"), 12))
            yy, xx = np.mgrid[:side, :side]
            image = np.zeros((side, side), np.float64)
            for k in range(1, int(g.integers(4, 9))):
                cy, cx, r = g.uniform(8, side - 8), g.uniform(8, side - 8), g.uniform(3, 7)
                m = (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r
                image[m] = g.uniform(0.5, 1.0)
                geom = Geometry.identity((side, side), format="png", dtype="uint8")
                write_mask(
                    root / "stage1_train" / cid / "masks" / f"nucleus_{k:03d}.png",
                    m.astype(np.uint8),
                    geom,
                    binary=True,
                )
            grey = np.clip(ndimage.gaussian_filter(image, 1) + g.normal(0, 0.03, image.shape), 0, 1) * 255
            rgba = np.stack([grey, grey * 0.8, grey, np.full_like(grey, 255)]).round().astype(np.uint8)
            geom = Geometry.identity((side, side), format="png", dtype="uint8", n_channels=4)
            write_image(root / "stage1_train" / cid / "images" / f"{cid}.png", rgba, geom)
        return root

    if kind == "luna16":
        sp = tuple(spacing) if spacing is not None else (0.7, 0.7, 2.5)
        for i in range(n):
            uid = f"1.3.6.1.4.1.14519.5.2.1.9999.{seed}.{i}"
            z, y, x = _grid(shape3)
            hu = np.full(shape3, -1000.0)
            body = (y / 0.9) ** 2 + (x / 0.9) ** 2 <= 1
            hu[body] = 40
            lab = np.zeros(shape3, np.uint8)
            for value, cx in ((3, -0.4), (4, 0.4)):
                m = ((z / 0.85) ** 2 + (y / 0.55) ** 2 + ((x - cx + g.uniform(-0.05, 0.05)) / 0.3) ** 2) <= 1
                lab[m] = value
                hu[m] = -800
            trachea = (y / 0.08) ** 2 + (x / 0.08) ** 2 <= 1
            lab[trachea & (z < -0.3)] = 5
            hu[trachea & (z < -0.3)] = -950
            hu += g.normal(0, 20, shape3)
            geom = _geometry(shape3, sp, direction).replace(format="mhd", dtype="int16")
            write_image(root / "subset0" / f"{uid}.mhd", hu.round().astype(np.int16), geom)
            write_mask(root / "seg-lungs-LUNA16" / f"{uid}.mhd", lab, geom)
        return root

    if kind == "brats":
        for i in range(n):
            split = "train" if i < max(1, n - n // 4) else "validation"
            case = root / split / f"brats_syn_pat{i:04d}_1"
            image, lab = phantom_3d(shape3, n_labels=4, rng=g)
            geom = _geometry(shape3, spacing, direction)
            brain = (image > 50).astype(np.uint8)
            for name, scale in (("Flair_subtrMeanDivStd", 1.0), ("T1c_subtrMeanDivStd", 0.7)):
                x = image * scale + g.normal(0, 5, shape3)
                write_image(case / f"{name}.nii.gz", ((x - x.mean()) / x.std()).astype(np.float32), geom)
            write_image(case / "brainmask.nii.gz", brain.astype(np.float32), geom)
            write_image(case / "OTMultiClass.nii.gz", lab.astype(np.float32), geom)
        return root

    # volumes / msd / dicom: images + labels folders
    img_dir, lab_dir = ("imagesTr", "labelsTr") if kind == "msd" else ("images", "labels")
    training = []
    for i in range(n):
        image, lab = phantom_3d(shape3, n_labels=2, rng=g)
        geom = _geometry(shape3, spacing, direction)
        name = f"case_{i:03d}"
        if kind == "dicom":
            write_image(root / img_dir / name, image.round().astype(np.int16), geom.replace(format="dicom"))
            write_mask(root / lab_dir / f"{name}.nii.gz", lab, geom)
            continue
        e = ".nii.gz" if kind == "msd" else ext
        write_image(root / img_dir / f"{name}{e}", image, geom)
        write_mask(root / lab_dir / f"{name}{e}", lab, geom)
        training.append({"image": f"./{img_dir}/{name}{e}", "label": f"./{lab_dir}/{name}{e}"})
    if kind == "msd":
        dj = {
            "name": "Synthetic",
            "description": "agseg synthetic 3D phantoms",
            "tensorImageSize": "3D",
            "modality": {"0": "MRI"},
            "labels": {"0": "background", "1": "structure_a", "2": "structure_b"},
            "numTraining": n,
            "training": training,
            "test": [],
        }
        (root / "dataset.json").write_text(json.dumps(dj, indent=2), encoding="utf-8")
    return root


def _shape_mask(kind: str, side: int) -> np.ndarray:
    """A ``(side, side)`` boolean mask of ``kind`` filling its box (every row and column of the box is touched)."""
    yy, xx = np.mgrid[:side, :side] + 0.5
    c, arm = side / 2, max(1.0, side / 6)
    if kind == "none":  # an image of noise only
        return np.zeros((side, side), bool)
    if kind == "square":
        return np.ones((side, side), bool)
    if kind == "cross":
        return (np.abs(yy - c) <= arm) | (np.abs(xx - c) <= arm)
    if kind == "disc":
        return (yy - c) ** 2 + (xx - c) ** 2 <= (side / 2) ** 2 + 0.5
    if kind == "bar":  # a diagonal bar from corner to corner
        return np.abs(yy - xx) <= 1.5 * arm
    raise ValueError(f"unknown shape {kind!r}; one of {', '.join(SHAPES)}")


def shape_images(
    n: int,
    size: int = 48,
    *,
    shapes: Sequence[str] = ("square", "cross"),
    shape_size: tuple[int, int] = (12, 18),
    contrast: float = 1.0,
    noise: float = 0.5,
    rng: np.random.Generator | int | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Images holding one shape each, at a random place on Gaussian noise; the shape's kind is the image's class.

    Args:
        n: number of images; classes alternate (``i % len(shapes)``), so every class has ``n // len(shapes)`` or one
            more.
        size: image side in pixels.
        shapes: the shape of each class (from :data:`SHAPES`; ``"none"``: noise only, an empty mask and box).
        shape_size: the range of the shape's side in pixels (uniform, inclusive).
        contrast: the shape's intensity above the background (mean 0).
        noise: standard deviation of the noise.
        rng: seed or generator.

    Returns:
        ``(images, labels, masks, boxes)``: float32 ``(n, size, size)``, int64 ``(n,)``, bool ``(n, size, size)``, and
        int64 ``(n, 4)`` boxes ``(y0, x0, y1, x1)`` around each shape (array order, ``y1``/``x1`` exclusive; all 0 for
        ``"none"``).
    """
    g = _rng(rng)
    lo, hi = int(shape_size[0]), int(shape_size[1])
    if not 1 <= lo <= hi <= size:
        raise ValueError(f"shape_size {shape_size} must lie within 1..size ({size})")
    images = g.normal(0.0, noise, (n, size, size)).astype(np.float32)
    labels = np.arange(n, dtype=np.int64) % len(shapes)
    masks = np.zeros((n, size, size), bool)
    boxes = np.zeros((n, 4), np.int64)
    for i in range(n):
        side = int(g.integers(lo, hi + 1))
        y0, x0 = (int(v) for v in g.integers(0, size - side + 1, 2))
        masks[i, y0 : y0 + side, x0 : x0 + side] = _shape_mask(shapes[labels[i]], side)
        images[i][masks[i]] += contrast
        boxes[i] = (y0, x0, y0 + side, x0 + side) if masks[i].any() else (0, 0, 0, 0)
    return images, labels, masks, boxes


def write_shape_dataset(
    out: str | Path,
    n: int = 16,
    *,
    layout: str = "list",
    size: int = 48,
    shapes: Sequence[str] = ("square", "cross"),
    seed: int = 0,
    **kw,
) -> Path:
    """Write :func:`shape_images` as 8-bit PNGs for the classification layouts.

    Args:
        out: folder to create (or fill).
        n, size, shapes, seed, kw: as :func:`shape_images`.
        layout: ``"list"`` (``images/shape_NNN.png`` + ``cases.csv`` with ``image,class``), ``"class_folders"``
            (``classes/<shape>/shape_NNN.png``) or ``"pattern"`` (``images/shape_NNN_<class>.png``: the class in the
            name).

    Returns:
        The dataset path to give ``load_dataset``: ``out/cases.csv`` (``list``), ``out/classes`` (``class_folders``)
        or ``out`` (``pattern``). The shapes' masks are written to ``out/masks/`` (same names) and their boxes to
        ``out/boxes.csv`` (``case, y0, x0, y1, x1``).
    """
    from agseg.data.io import Geometry, write_image

    if layout not in ("list", "class_folders", "pattern"):
        raise ValueError(f"unknown layout {layout!r}; one of list, class_folders, pattern")
    root = Path(out)
    images, labels, masks, boxes = shape_images(n, size, shapes=shapes, rng=seed, **kw)
    lo, hi = float(images.min()), float(images.max())
    rows, box_rows = ["image,class"], ["case,y0,x0,y1,x1"]
    geom = Geometry.identity((size, size), format="png", dtype="uint8")
    for i in range(n):
        c = int(labels[i])
        name = f"shape_{i:03d}_{c}" if layout == "pattern" else f"shape_{i:03d}"
        folder = root / "classes" / shapes[c] if layout == "class_folders" else root / "images"
        pixels = np.round((images[i] - lo) / (hi - lo) * 255).astype(np.uint8)
        write_image(folder / f"{name}.png", pixels, geom)
        write_image(root / "masks" / f"{name}.png", (masks[i] * 255).astype(np.uint8), geom)
        rows.append(f"images/{name}.png,{c}")
        box_rows.append(f"{name},{','.join(str(int(v)) for v in boxes[i])}")
    (root / "boxes.csv").write_text("\n".join(box_rows) + "\n", encoding="utf-8")
    if layout == "list":
        (root / "cases.csv").write_text("\n".join(rows) + "\n", encoding="utf-8")
        return root / "cases.csv"
    return root / "classes" if layout == "class_folders" else root
