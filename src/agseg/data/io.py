"""Read and write medical images without losing their geometry.

Formats (SimpleITK is the engine): PNG, JPEG, TIFF, BMP (2D raster), NIfTI (``.nii``, ``.nii.gz``), MetaImage
(``.mhd`` + ``.raw``/``.zraw``, ``.mha``), NRRD (``.nrrd``, ``.nhdr``) and DICOM (a folder holding one series, or a
single ``.dcm`` file).

Axis order (the one SimpleITK gives):

* images are returned **channels first** ``(C, *spatial)`` with ``spatial = (y, x)`` in 2D and ``(z, y, x)`` in 3D;
  a grey image has ``C == 1``, an RGB(A) PNG has ``C == 3`` (alpha dropped), a 4D NIfTI has its 4th axis as ``C``;
* masks are returned as ``(*spatial)``.

:class:`Geometry` keeps spacing, origin and direction in **ITK (physical) order** ``(x, y[, z])``, exactly as SimpleITK
reports them; :attr:`Geometry.array_spacing` gives the spacing in array order ``(z, y, x)``, the order the arrays,
:class:`~agseg.data.preprocess.PreprocessConfig` and spacing-aware metrics use.
"""

from __future__ import annotations

import datetime
import functools
import gzip
import logging
import re
import struct
import zlib
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import SimpleITK as sitk

from agseg.data.errors import DataError

log = logging.getLogger(__name__)

#: file-name ending -> format name (longest endings first)
EXTENSIONS: dict[str, str] = {
    ".nii.gz": "nifti",
    ".nii": "nifti",
    ".mhd": "mhd",
    ".mha": "mha",
    ".nrrd": "nrrd",
    ".nhdr": "nrrd",
    ".png": "png",
    ".jpg": "jpg",
    ".jpeg": "jpg",
    ".tif": "tiff",
    ".tiff": "tiff",
    ".bmp": "bmp",
    ".dcm": "dicom",
}
#: 2D raster formats: no spacing/origin/direction on disk (spacing 1, origin 0, identity direction)
RASTER_FORMATS = frozenset({"png", "jpg", "tiff", "bmp"})


def split_ext(path: str | Path) -> tuple[str, str]:
    """``"a/b.nii.gz"`` -> ``("b", ".nii.gz")``; unknown endings split at the last dot (``("b", ".xyz")``)."""
    name = Path(path).name
    low = name.lower()
    for ext in EXTENSIONS:
        if low.endswith(ext) and len(name) > len(ext):
            return name[: -len(ext)], name[-len(ext) :]
    stem, dot, ext = name.rpartition(".")
    return (stem, dot + ext) if dot and stem else (name, "")


def detect_format(path: str | Path) -> str:
    """Format name of ``path`` from its ending (``"nifti"``, ``"mhd"``, ``"png"``, ...); a folder is ``"dicom"``.

    Raises:
        DataError: The ending is not a supported format.
    """
    p = Path(path)
    if p.is_dir():
        return "dicom"
    low = p.name.lower()
    for ext, fmt in EXTENSIONS.items():
        if low.endswith(ext):
            return fmt
    raise DataError(p, f"unsupported file type (supported endings: {', '.join(EXTENSIONS)}; a folder = DICOM series)")


def is_image_file(path: str | Path) -> bool:
    """True for a visible file with a supported ending (macOS ``._*`` resource forks and dot-files are ignored)."""
    p = Path(path)
    if p.name.startswith(".") or not p.is_file():
        return False
    low = p.name.lower()
    return any(low.endswith(ext) for ext in EXTENSIONS) and not low.endswith(".raw")


def data_files(path: str | Path) -> list[Path]:
    """Every file whose bytes make up the image at ``path`` (``.mhd`` + its ``.raw``, ``.nhdr`` + data, DICOM files).

    Used for cache keys: replacing a ``.raw`` behind an unchanged ``.mhd`` must change the key.
    """
    p = Path(path)
    if p.is_dir():
        return sorted(f for f in p.iterdir() if f.is_file() and not f.name.startswith("."))
    out = [p]
    low = p.name.lower()
    if low.endswith((".mhd", ".nhdr")) and p.is_file():
        key = "elementdatafile" if low.endswith(".mhd") else "data file"
        try:
            head = p.read_text(errors="replace", encoding="utf-8")[:20000]
        except OSError:
            return out
        for line in head.splitlines():
            k, sep, v = line.partition("=" if low.endswith(".mhd") else ":")
            if sep and k.strip().lower() == key:
                v = v.strip()
                if v and v.upper() not in ("LOCAL", "LIST") and "%" not in v:
                    out.append(p.parent / v)
                break
    return out


@dataclass(frozen=True)
class Geometry:
    """Where an array sits in physical space, plus what it was on disk.

    Attributes:
        spacing: Voxel size per axis in ITK order ``(x, y[, z])`` (mm for medical formats, 1 for PNG).
        origin: Physical position of voxel 0, ITK order.
        direction: Direction cosines, row-major ``ndim x ndim`` flattened (ITK ``GetDirection()``).
        shape: Spatial array shape in **array order** ``(y, x)`` / ``(z, y, x)``.
        format: Format read from (``"png"``, ``"nifti"``, ``"mhd"``, ``"mha"``, ``"nrrd"``, ``"dicom"``, ...).
        dtype: Pixel dtype on disk (numpy name), e.g. ``"uint8"``.
        n_channels: Channels of the image (components, or the 4th axis of a 4D file).
    """

    spacing: tuple[float, ...]
    origin: tuple[float, ...]
    direction: tuple[float, ...]
    shape: tuple[int, ...]
    format: str = "nifti"
    dtype: str = "float32"
    n_channels: int = 1

    def __post_init__(self) -> None:
        nd = len(self.shape)
        object.__setattr__(self, "spacing", tuple(float(v) for v in self.spacing))
        object.__setattr__(self, "origin", tuple(float(v) for v in self.origin))
        object.__setattr__(self, "direction", tuple(float(v) for v in self.direction))
        object.__setattr__(self, "shape", tuple(int(v) for v in self.shape))
        if len(self.spacing) != nd or len(self.origin) != nd or len(self.direction) != nd * nd:
            raise ValueError(f"inconsistent geometry for shape {self.shape}: {self}")

    @property
    def ndim(self) -> int:
        """Number of spatial dimensions (2 or 3)."""
        return len(self.shape)

    @property
    def array_spacing(self) -> tuple[float, ...]:
        """Spacing in array order ``(z, y, x)`` / ``(y, x)``: pass this to spacing-aware metrics."""
        return self.spacing[::-1]

    @property
    def direction_matrix(self) -> np.ndarray:
        """Direction cosines as an ``(ndim, ndim)`` matrix (columns are the index axes in ITK order)."""
        return np.asarray(self.direction, dtype=np.float64).reshape(self.ndim, self.ndim)

    @classmethod
    def identity(cls, shape: tuple[int, ...], **kw: Any) -> Geometry:
        """Unit spacing, zero origin, identity direction (what a PNG has)."""
        nd = len(shape)
        return cls((1.0,) * nd, (0.0,) * nd, tuple(np.eye(nd).ravel()), tuple(shape), **kw)

    @classmethod
    def from_sitk(cls, img: sitk.Image, **kw: Any) -> Geometry:
        """Geometry of a SimpleITK image (shape in array order)."""
        return cls(img.GetSpacing(), img.GetOrigin(), img.GetDirection(), tuple(img.GetSize())[::-1], **kw)

    def apply_to(self, img: sitk.Image) -> sitk.Image:
        """Set spacing, origin and direction on ``img`` (in place) and return it."""
        img.SetSpacing(self.spacing)
        img.SetOrigin(self.origin)
        img.SetDirection(self.direction)
        return img

    def replace(self, **changes: Any) -> Geometry:
        """A copy with some fields changed."""
        return replace(self, **changes)

    def mismatch(self, other: Geometry, tol: float = 1e-3) -> str | None:
        """Why ``other`` is not on the same grid as ``self`` (``None`` when it is).

        Shapes must be equal; spacing must agree to a relative ``tol``; origins to ``tol`` times the largest
        spacing (plus 1e-4 mm); direction cosines to ``tol``.
        """
        if self.shape != other.shape:
            return f"size {other.shape} differs from {self.shape}"
        if (self.spacing, self.origin, self.direction) == (other.spacing, other.origin, other.direction):
            return None
        if not np.allclose(self.spacing, other.spacing, rtol=tol, atol=1e-6):
            return f"spacing {_fmt(other.spacing)} differs from {_fmt(self.spacing)}"
        if not np.allclose(self.origin, other.origin, rtol=0, atol=tol * max(self.spacing) + 1e-4):
            return f"origin {_fmt(other.origin)} differs from {_fmt(self.origin)}"
        if not np.allclose(self.direction, other.direction, rtol=0, atol=tol):
            return f"direction {_fmt(other.direction)} differs from {_fmt(self.direction)}"
        return None

    def to_dict(self) -> dict[str, Any]:
        """JSON/YAML-safe dict (lists, floats, ints, strings)."""
        d = asdict(self)
        for k in ("spacing", "origin", "direction", "shape"):
            d[k] = list(d[k])
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Geometry:
        """Inverse of :meth:`to_dict`."""
        return cls(**{k: (tuple(v) if isinstance(v, list) else v) for k, v in d.items()})


def _fmt(v: tuple[float, ...]) -> str:
    return "(" + ", ".join(f"{x:.4g}" for x in v) + ")"


@functools.lru_cache(maxsize=64)
def _pixel_dtype(pixel_id: int, dim: int) -> str:
    return str(sitk.GetArrayViewFromImage(sitk.Image([1] * dim, pixel_id)).dtype)


# ----------------------------------------------------------------------------------------------------------- reading
def _read_sitk(path: Path, fmt: str, series_uid: str | None) -> sitk.Image:
    if not path.exists():
        raise DataError(path, "file not found")
    try:
        if fmt == "dicom" and path.is_dir():
            reader = sitk.ImageSeriesReader()
            ids = reader.GetGDCMSeriesIDs(str(path))
            if not ids:
                raise DataError(path, "no DICOM series found in this folder")
            if series_uid is None:
                if len(ids) > 1:
                    raise DataError(path, f"{len(ids)} DICOM series in one folder ({', '.join(ids)}); pass series_uid")
                series_uid = ids[0]
            elif series_uid not in ids:
                raise DataError(path, f"DICOM series {series_uid} not found (found {', '.join(ids)})")
            reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(path), series_uid))
            return reader.Execute()
        if path.stat().st_size == 0:
            raise DataError(path, "empty file (0 bytes)")
        return sitk.ReadImage(str(path))
    except DataError:
        raise
    except (RuntimeError, OSError) as e:
        msg = " ".join(str(e).split())
        msg = re.sub(r"^.*?ITK ERROR: ", "", msg)
        msg = re.sub(r"\w+IO\(0x[0-9a-f]+\): ", "", msg).replace(str(path), "").strip(" :")[-300:]
        raise DataError(path, f"cannot read {fmt} file (unreadable, truncated or corrupt): {msg}") from e


_NIFTI_FLOATS = {16: "f4", 64: "f8"}


def _check_nifti(path: Path) -> None:
    """Checks ITK skips when reading NIfTI.

    1. Truncation: ITK reads a truncated NIfTI without complaint (missing voxels come back as zeros). For ``.nii``
       the file must reach ``vox_offset + data bytes``; for ``.nii.gz`` the gzip trailer's ISIZE must match (when it
       does not, the stream is decompressed to be sure: concatenated gzip members are legal).
    2. NaN/Inf: ITK's NIfTI reader turns them into 0. Float data is therefore streamed once and counted.
    """
    gz = path.name.lower().endswith(".gz")
    try:
        with gzip.open(path, "rb") if gz else open(path, "rb") as f:
            hdr = f.read(544)
    except (OSError, EOFError, zlib.error) as e:
        raise DataError(path, f"cannot read NIfTI header (truncated or corrupt): {e}") from e
    if len(hdr) < 348:
        raise DataError(path, f"truncated NIfTI file: header has {len(hdr)} of 348 bytes")
    for end in "<>":
        sizeof = struct.unpack(end + "i", hdr[:4])[0]
        if sizeof in (348, 540):
            break
    else:
        return  # not a NIfTI header ITK would have rejected; leave it to ITK
    if sizeof == 348:
        datatype = struct.unpack(end + "h", hdr[70:72])[0]
        dims = struct.unpack(end + "8h", hdr[40:56])
        bitpix = struct.unpack(end + "h", hdr[72:74])[0]
        vox_offset = int(struct.unpack(end + "f", hdr[108:112])[0])
    else:
        datatype = struct.unpack(end + "h", hdr[12:14])[0]
        bitpix = struct.unpack(end + "h", hdr[14:16])[0]
        dims = struct.unpack(end + "8q", hdr[16:80])
        vox_offset = struct.unpack(end + "q", hdr[168:176])[0]
    nd = max(0, min(int(dims[0]), 7))
    offset = max(vox_offset, sizeof)
    nbytes = int(np.prod([max(1, d) for d in dims[1 : nd + 1]])) * bitpix // 8
    expected = offset + nbytes
    float_type = _NIFTI_FLOATS.get(int(datatype))
    if float_type is None:
        if not gz:
            size = path.stat().st_size
            if size < expected:
                raise DataError(path, f"truncated NIfTI file: {size} bytes, header needs {expected}")
            return
        with open(path, "rb") as f:
            f.seek(-4, 2)
            if struct.unpack("<I", f.read(4))[0] == expected % 2**32:
                return
    dtype = np.dtype(end + float_type) if float_type else None
    total, bad, pending, remaining = 0, 0, b"", nbytes
    try:
        with gzip.open(path, "rb") if gz else open(path, "rb") as f:
            total = len(f.read(offset))
            while chunk := f.read(1 << 22):
                total += len(chunk)
                if dtype is not None and remaining > 0:
                    buf = pending + chunk[:remaining]
                    remaining -= min(len(chunk), remaining)
                    cut = len(buf) - len(buf) % dtype.itemsize
                    bad += int(np.count_nonzero(~np.isfinite(np.frombuffer(buf[:cut], dtype))))
                    pending = buf[cut:]
    except (OSError, EOFError, zlib.error) as e:
        raise DataError(path, f"truncated or corrupt NIfTI (data stream broken after {total} bytes): {e}") from e
    if total < expected:
        raise DataError(path, f"truncated NIfTI file: {total} bytes of data and header, header needs {expected}")
    if bad:
        raise DataError(path, f"image has {bad} NaN/Inf voxels")


def _to_array(img: sitk.Image, path: Path, fmt: str, drop_alpha: bool) -> tuple[np.ndarray, Geometry]:
    arr = sitk.GetArrayFromImage(img)
    nc = img.GetNumberOfComponentsPerPixel()
    dim = img.GetDimension()
    if nc > 1:
        arr = np.moveaxis(arr, -1, 0)
        if drop_alpha and fmt in RASTER_FORMATS and nc in (2, 4):
            arr = arr[:-1]
        spacing, origin, direction = img.GetSpacing(), img.GetOrigin(), img.GetDirection()
    elif dim == 4:  # 4D NIfTI (MSD multi-modal): the 4th ITK axis = channels, geometry of the first three
        spacing, origin = img.GetSpacing()[:3], img.GetOrigin()[:3]
        d4 = np.asarray(img.GetDirection()).reshape(4, 4)
        direction = tuple(d4[:3, :3].ravel())
    else:
        arr = arr[None]
        spacing, origin, direction = img.GetSpacing(), img.GetOrigin(), img.GetDirection()
    arr = np.ascontiguousarray(arr)
    geom = Geometry(spacing, origin, direction, arr.shape[1:], fmt, str(arr.dtype), arr.shape[0])
    return arr, geom


def read_image(
    path: str | Path, *, drop_alpha: bool = True, series_uid: str | None = None
) -> tuple[np.ndarray, Geometry]:
    """Read an image file (or a DICOM series folder) with its geometry.

    Args:
        path: Image file, or a folder holding one DICOM series.
        drop_alpha: Drop the alpha channel of 2-/4-channel raster images (RGBA PNG -> RGB).
        series_uid: Which DICOM series to read when a folder holds several.

    Returns:
        ``(array, geometry)``: ``array`` is ``(C, *spatial)`` in the file's dtype (array order ``(z, y, x)``).

    Raises:
        DataError: Missing, empty, unreadable, truncated or unsupported file (the message names it).
    """
    p = Path(path)
    fmt = detect_format(p)
    img = _read_sitk(p, fmt, series_uid)
    if fmt == "nifti":
        _check_nifti(p)
    return _to_array(img, p, fmt, drop_alpha)


def read_mask(path: str | Path, **kw: Any) -> tuple[np.ndarray, Geometry]:
    """Read a mask: like :func:`read_image` but returns ``(*spatial)`` raw values (no thresholding or casting).

    A multi-channel mask (e.g. an RGB PNG) is accepted when all its channels are equal.

    Raises:
        DataError: As :func:`read_image`, or channels that differ.
    """
    arr, geom = read_image(path, **kw)
    if arr.shape[0] > 1 and not all(np.array_equal(arr[0], arr[c]) for c in range(1, arr.shape[0])):
        raise DataError(path, f"mask has {arr.shape[0]} channels with different values; expected one channel")
    return arr[0], geom.replace(n_channels=1)


def read_header(path: str | Path) -> Geometry:
    """Geometry of an image without reading its pixels (fast; DICOM series are read in full).

    Raises:
        DataError: Missing or unreadable file.
    """
    p = Path(path)
    fmt = detect_format(p)
    if fmt == "dicom" or not p.exists():
        return read_image(p)[1]
    r = sitk.ImageFileReader()
    r.SetFileName(str(p))
    try:
        r.ReadImageInformation()
    except RuntimeError as e:
        raise DataError(
            p, f"cannot read {fmt} header (unreadable or corrupt): {' '.join(str(e).split())[-300:]}"
        ) from e
    size, nc, dim = r.GetSize(), r.GetNumberOfComponents(), r.GetDimension()
    dtype = _pixel_dtype(r.GetPixelID(), dim)
    spacing, origin, direction = r.GetSpacing(), r.GetOrigin(), r.GetDirection()
    if dim == 4 and nc == 1:
        nc, size = size[3], size[:3]
        spacing, origin = spacing[:3], origin[:3]
        direction = tuple(np.asarray(direction).reshape(4, 4)[:3, :3].ravel())
    elif nc in (2, 4) and fmt in RASTER_FORMATS:
        nc -= 1
    return Geometry(spacing, origin, direction, tuple(size)[::-1], fmt, dtype, nc)


# ----------------------------------------------------------------------------------------------------------- writing
_RASTER_DTYPES = {"png": ("uint8", "uint16"), "jpg": ("uint8",), "bmp": ("uint8",), "tiff": ("uint8", "uint16")}


def _mask_values(arr: np.ndarray, fmt: str, binary: bool | None) -> np.ndarray:
    if arr.dtype == bool:
        arr = arr.astype(np.uint8)
    if arr.dtype.kind == "f" and (not np.all(np.isfinite(arr)) or not np.array_equal(arr, np.round(arr))):
        raise ValueError("a mask must hold integer label values; write probabilities with mask=False")
    lo, hi = (int(arr.min()), int(arr.max())) if arr.size else (0, 0)
    if lo < 0:
        raise ValueError(f"negative label value {lo} cannot be written as a mask")
    if binary and fmt in RASTER_FORMATS:
        return (arr > 0).astype(np.uint8) * np.uint8(255)  # a binary label set as 0/255 in 8-bit images
    return arr.astype(np.uint8 if hi < 256 else np.uint16)


def _write_dicom_series(folder: Path, img: sitk.Image) -> None:
    """One file per slice with ImagePositionPatient/ImageOrientationPatient, so a series reader recovers geometry."""
    if img.GetDimension() == 2:
        img = sitk.JoinSeries(img)
    folder.mkdir(parents=True, exist_ok=True)
    if any(folder.iterdir()):
        raise DataError(folder, "is not empty: a DICOM series is written into a new (or empty) folder only")
    now = datetime.datetime.now()
    date, time = now.strftime("%Y%m%d"), now.strftime("%H%M%S.%f")
    uid_root = "1.2.826.0.1.3680043.8.498." + date + time.replace(".", "")
    d = img.GetDirection()
    tags = [
        ("0008|0031", time),
        ("0008|0021", date),
        ("0008|0008", "DERIVED\\SECONDARY"),
        ("0008|0060", "OT"),
        ("0020|000d", uid_root + ".1"),
        ("0020|000e", uid_root + ".2"),
        ("0020|0037", "\\".join(f"{v:.10g}" for v in (d[0], d[3], d[6], d[1], d[4], d[7]))),
        ("0008|103e", "agseg"),
        ("0018|0050", f"{img.GetSpacing()[2]:.10g}"),
    ]
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    for i in range(img.GetDepth()):
        s = img[:, :, i]
        for tag, value in tags:
            s.SetMetaData(tag, value)
        s.SetMetaData("0020|0032", "\\".join(f"{v:.10g}" for v in img.TransformIndexToPhysicalPoint((0, 0, i))))
        s.SetMetaData("0020|0013", str(i + 1))
        s.SetMetaData("0008|0018", f"{uid_root}.3.{i + 1}")
        writer.SetFileName(str(folder / f"{i + 1:04d}.dcm"))
        writer.Execute(s)


def write_image(
    path: str | Path,
    array: np.ndarray,
    geometry: Geometry,
    *,
    mask: bool = False,
    binary: bool | None = None,
    compress: bool | None = None,
) -> Path:
    """Write ``array`` with ``geometry`` in the format named by ``path``'s ending (a folder for a DICOM geometry).

    Args:
        path: Output file; its ending picks the format. With no known ending and a DICOM ``geometry`` it is a folder
            that receives one ``.dcm`` per slice.
        array: ``(*spatial)`` or ``(C, *spatial)``; ``spatial`` must equal ``geometry.shape``.
        geometry: Spacing/origin/direction to write (raster formats cannot store them).
        mask: Write integer labels as they are (uint8, or uint16 above 255). JPEG is lossy, so a mask for a JPEG
            input is written as PNG (logged).
        binary: With ``mask``: the mask belongs to a binary label set (background + one class), written as 0/255 in
            PNG/TIFF/BMP so that it can be seen; other formats keep the values. The caller says so (from the
            experiment's label set): the encoding never depends on which values a particular mask happens to hold.
        compress: Compress where the format allows; default: yes except ``.mhd`` (kept as ``.raw``, like LUNA16).

    Returns:
        The path written (differs from ``path`` only for a JPEG mask, written as ``.png``).

    Raises:
        ValueError: Shape and geometry disagree, or non-integer values written as a mask.
    """
    p = Path(path)
    try:
        fmt = detect_format(p) if split_ext(p)[1].lower() in EXTENSIONS or p.is_dir() else geometry.format
    except DataError:
        fmt = geometry.format
    arr = np.asarray(array)
    nd = geometry.ndim
    if arr.ndim not in (nd, nd + 1):
        raise ValueError(f"{p}: array of shape {arr.shape} cannot be written with {nd}D geometry {geometry.shape}")
    if tuple(arr.shape[-nd:]) != geometry.shape:
        raise ValueError(f"{p}: array spatial shape {arr.shape[-nd:]} differs from the geometry's {geometry.shape}")
    if arr.ndim == nd + 1 and arr.shape[0] == 1:
        arr = arr[0]
    if mask:
        if arr.ndim != nd:
            raise ValueError(f"{p}: a mask must be (*spatial), got {arr.shape}")
        arr = _mask_values(arr, fmt, binary)
        if fmt == "jpg":
            p = p.with_name(split_ext(p)[0] + ".png")
            fmt = "png"
            log.warning("JPEG is lossy: writing the mask as PNG instead: %s", p)
    elif fmt in _RASTER_DTYPES and str(arr.dtype) not in _RASTER_DTYPES[fmt]:
        target = geometry.dtype if geometry.dtype in _RASTER_DTYPES[fmt] else _RASTER_DTYPES[fmt][0]
        info = np.iinfo(target)
        arr = np.clip(np.round(arr), info.min, info.max).astype(target)
    if fmt == "dicom" and arr.dtype.kind == "f":
        arr = np.round(arr).astype(np.int16)
    if arr.dtype == np.int64 or arr.dtype == bool:
        arr = arr.astype(np.int32 if arr.dtype == np.int64 else np.uint8)
    vector = arr.ndim == nd + 1
    img = sitk.GetImageFromArray(np.moveaxis(arr, 0, -1) if vector else arr, isVector=vector)
    geometry.apply_to(img)
    if fmt == "dicom" and split_ext(p)[1].lower() != ".dcm":
        _write_dicom_series(p, img)
        return p
    p.parent.mkdir(parents=True, exist_ok=True)
    if compress is None:
        compress = fmt != "mhd"
    try:
        sitk.WriteImage(img, str(p), useCompression=bool(compress))
    except RuntimeError as e:
        raise DataError(p, f"cannot write {fmt}: {' '.join(str(e).split())[-300:]}") from e
    return p


def write_mask(path: str | Path, mask: np.ndarray, geometry: Geometry, **kw: Any) -> Path:
    """:func:`write_image` with ``mask=True``: labels ``(*spatial)`` in the input's format and geometry."""
    return write_image(path, mask, geometry, mask=True, **kw)


def mask_path_for(image_path: str | Path, out_dir: str | Path, suffix: str = "") -> Path:
    """Where to write the mask for ``image_path`` inside ``out_dir``: same name and format (JPEG -> PNG).

    ``mask_path_for("in/ct.nii.gz", "out", "_pred")`` -> ``out/ct_pred.nii.gz``; a DICOM folder ``in/ser`` ->
    ``out/ser_pred`` (a folder).
    """
    p = Path(image_path)
    if p.is_dir():
        return Path(out_dir) / (p.name + suffix)
    stem, ext = split_ext(p)
    if ext.lower() in (".jpg", ".jpeg"):
        ext = ".png"
    return Path(out_dir) / f"{stem}{suffix}{ext}"
