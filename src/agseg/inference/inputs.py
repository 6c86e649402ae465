"""What ``agseg predict`` is given, as cases: files, folders of any format, DICOM series, multi-channel cases.

An input is one case: one image file, a folder holding one DICOM series, or the channel files of a multi-channel
case (nnU-Net ``CASE_0000.nii.gz``, ``CASE_0001.nii.gz``; a case folder whose files match the channel patterns the
model was trained with, e.g. BRATS ``Flair*``, ``T1c*``). A folder that is none of these is expanded into the
cases it holds. Each case has one output name; two inputs that would write the same output are refused before any
work, as is an output that would overwrite an input.
"""

from __future__ import annotations

import fnmatch
import re
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from agseg.data.errors import DataError
from agseg.data.io import is_image_file, split_ext

__all__ = ["PredictInput", "collect_inputs", "is_dicom_folder"]

_CHANNEL = re.compile(r"^(.+)_(\d{4})$")


@dataclass(frozen=True)
class PredictInput:
    """One case to predict.

    Attributes:
        name: the case name (the output's stem).
        paths: one path per channel file (a single file or DICOM folder for one channel).
        ext: the output's file ending (that of the first channel; ``""`` for a DICOM folder).
    """

    name: str
    paths: tuple[Path, ...]
    ext: str

    @property
    def source(self) -> Path:
        """The path named in messages: the file, the DICOM folder, or the first channel file."""
        return self.paths[0]

    def output(self, out_dir: str | Path, suffix: str = "") -> Path:
        """Where this case's mask goes: ``out_dir/<name><suffix><ext>`` (JPEG -> PNG; a DICOM series -> a folder)."""
        ext = ".png" if self.ext.lower() in (".jpg", ".jpeg") else self.ext
        return Path(out_dir) / f"{self.name}{suffix}{ext}"


def is_dicom_folder(path: Path) -> bool:
    """True for a folder holding ``.dcm`` files (or files GDCM reads as one series)."""
    if not path.is_dir():
        return False
    files = [f for f in path.iterdir() if f.is_file() and not f.name.startswith(".")]
    if any(f.suffix.lower() == ".dcm" for f in files):
        return True
    if files and not any(is_image_file(f) for f in files):
        import SimpleITK as sitk

        try:
            return bool(sitk.ImageSeriesReader.GetGDCMSeriesIDs(str(path)))
        except RuntimeError:
            return False
    return False


def _single(p: Path) -> PredictInput:
    if p.is_dir():
        return PredictInput(p.name, (p,), "")
    stem, ext = split_ext(p)
    return PredictInput(stem, (p,), ext)


def _match(files: Sequence[Path], pattern: str) -> list[Path]:
    return [f for f in files if fnmatch.fnmatch(f.name, pattern) or fnmatch.fnmatch(split_ext(f)[0], pattern)]


def _case_folder(folder: Path, patterns: Sequence[str]) -> PredictInput | None:
    """The channel files of a case folder, one per pattern, or None when the folder does not fit the patterns."""
    files = [f for f in sorted(folder.iterdir()) if is_image_file(f)]
    chans = []
    for pat in patterns:
        hit = _match(files, pat)
        if len(hit) != 1:
            return None
        chans.append(hit[0])
    return PredictInput(folder.name, tuple(chans), split_ext(chans[0])[1])


def _group_channels(files: Sequence[Path], in_channels: int) -> list[PredictInput]:
    """Single-channel files as they are; with ``in_channels > 1``, nnU-Net ``CASE_000k`` files grouped by case."""
    if in_channels <= 1:
        return [_single(f) for f in files]
    groups: dict[tuple[Path, str, str], dict[int, Path]] = defaultdict(dict)
    out: list[PredictInput] = []
    for f in files:
        stem, ext = split_ext(f)
        m = _CHANNEL.match(stem)
        if m is None:
            out.append(_single(f))
            continue
        groups[(f.parent, m.group(1), ext)][int(m.group(2))] = f
    for (_, case, ext), chans in groups.items():
        if sorted(chans) != list(range(in_channels)):
            first = chans[min(chans)]
            raise DataError(
                first,
                f"case {case!r} has channel files {sorted(chans)}, the model needs {in_channels} "
                f"({', '.join(f'{case}_{k:04d}{ext}' for k in range(in_channels))})",
            )
        out.append(PredictInput(case, tuple(chans[k] for k in range(in_channels)), ext))
    return out


def collect_inputs(
    inputs: Iterable[str | Path], in_channels: int = 1, channel_patterns: Sequence[str] | None = None
) -> list[PredictInput]:
    """The cases to predict from files and folders.

    Args:
        inputs: image files, DICOM series folders, folders of images (any supported format), case folders.
        in_channels: the model's input channels: with more than one, nnU-Net ``CASE_000k`` files are grouped into
            one case each.
        channel_patterns: file patterns of the channels in a case folder (the training layout's ``channels``
            option, stored in the model bundle); a folder whose files match them is one case, a folder of such
            folders many.

    Raises:
        DataError: an input that does not exist, a folder without images, an incomplete multi-channel case, or two
            inputs that would write the same output (both named).
    """
    cases: list[PredictInput] = []
    explicit: list[Path] = []
    for item in inputs:
        p = Path(item)
        if not p.exists():
            raise DataError(p, "input not found")
        if not p.is_dir():
            explicit += [f for f in _with_sibling_channels(p, in_channels) if f not in explicit]
            continue
        if is_dicom_folder(p):
            cases.append(_single(p))
            continue
        if channel_patterns and (case := _case_folder(p, channel_patterns)) is not None:
            cases.append(case)
            continue
        files = [f for f in sorted(p.iterdir()) if is_image_file(f)]
        subs = [d for d in sorted(p.iterdir()) if d.is_dir() and not d.name.startswith(".")]
        found = _group_channels(files, in_channels)
        for d in subs:
            if is_dicom_folder(d):
                found.append(_single(d))
            elif channel_patterns and (case := _case_folder(d, channel_patterns)) is not None:
                found.append(case)
        if not found:
            what = f"files matching {list(channel_patterns)}" if channel_patterns else "image files or DICOM series"
            raise DataError(p, f"folder holds no {what}")
        cases.extend(found)
    merged = _group_channels(explicit, in_channels) + cases
    seen: dict[str, PredictInput] = {}
    for c in merged:
        key = f"{c.name}{c.ext}".lower()
        if key in seen and seen[key].paths != c.paths:
            raise DataError(
                c.source,
                f"two inputs would write the same output {c.name}{c.ext} (also {seen[key].source}); predict them "
                "into different --out folders",
            )
        seen[key] = c
    return list({(c.name, c.paths): c for c in merged}.values())


def _with_sibling_channels(p: Path, in_channels: int) -> list[Path]:
    """``p``, and with ``in_channels > 1`` the other channel files of its nnU-Net case beside it (so that naming
    ``CASE_0000.nii.gz`` alone predicts the whole case)."""
    if in_channels <= 1:
        return [p]
    stem, ext = split_ext(p)
    m = _CHANNEL.match(stem)
    if m is None:
        return [p]
    siblings = [p.parent / f"{m.group(1)}_{k:04d}{ext}" for k in range(in_channels)]
    return [f for f in siblings if f.exists()] if p in siblings else [p]
