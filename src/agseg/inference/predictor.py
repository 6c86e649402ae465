"""Predict masks for images in any supported format, in the input's own grid and geometry.

read -> the bundle's preprocessing -> whole-image or sliding-window logits (bf16 autocast where it helps) ->
probabilities -> preprocessing undone (linear resampling of probabilities, then threshold/argmax) -> mask written
in the input's format with its spacing, origin and direction. Inputs are never overwritten.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from agseg.data.errors import DataError
from agseg.data.io import Geometry, data_files, detect_format, mask_path_for, read_image, split_ext, write_image
from agseg.data.preprocess import invert
from agseg.fileio import atomic_path
from agseg.inference.bundle import ModelBundle, load_bundle
from agseg.inference.sliding import predict_logits, predict_with_attention
from agseg.nets.base import has_attention
from agseg.runtime import amp_dtype, flush_denormal, resolve_device
from agseg.tasks import logits_to_probs, probs_to_indices

__all__ = ["Prediction", "Predictor", "collect_inputs"]

log = logging.getLogger(__name__)


@dataclass
class Prediction:
    """One prediction on the input's grid.

    Attributes:
        label: segmentation: label values ``(*spatial)`` (uint8/uint16), the bundle's label values;
            classification: the predicted class value (a 0-d array).
        probs: class probabilities ``(K, *spatial)`` or, for a classifier, ``(K,)`` (K = 1: probability of the
            foreground / positive class).
        geometry: the input's geometry.
        attention: gate name -> ``(heads, *spatial)`` attention maps in [0, 1] (only when asked for).
    """

    label: np.ndarray
    probs: np.ndarray
    geometry: Geometry
    attention: dict[str, np.ndarray] = field(default_factory=dict)


def collect_inputs(inputs: Iterable[str | Path]) -> list[Path]:
    """Expand folders into their image files (a folder of DICOM slices counts as one input).

    Raises:
        DataError: an input that does not exist or a folder without images.
    """
    out: list[Path] = []
    for item in inputs:
        p = Path(item)
        if not p.exists():
            raise DataError(p, "input not found")
        if p.is_dir():
            try:
                if detect_format(p) == "dicom":
                    out.append(p)
                    continue
            except DataError:
                pass
            files = data_files(p)
            if not files:
                raise DataError(p, "folder holds no image files")
            out.extend(files)
        else:
            out.append(p)
    return out


class Predictor:
    """Applies a trained bundle to arrays or files.

    Args:
        model: the net (eval mode is set here).
        bundle: its :class:`~agseg.inference.bundle.ModelBundle`.
        device: ``"auto"``, ``"cpu"`` or ``"cuda"``.
        amp: ``"auto"`` (bf16 on CPUs with AMX/AVX-512 bf16 and on CUDA), ``"bf16"`` or ``"off"``.
        overlap: sliding-window overlap.
    """

    def __init__(
        self, model: torch.nn.Module, bundle: ModelBundle, device: str = "auto", amp: str = "auto", overlap: float = 0.5
    ) -> None:
        self.device = resolve_device(device)
        self.model = model.to(self.device).eval()
        self.bundle = bundle
        self.pre = bundle.preprocessor()
        self.amp = amp_dtype(amp, self.device)
        self.overlap = overlap
        self.label_set = bundle.label_set
        self.labels = np.asarray(self.label_set.values)
        self.task = bundle.task

    @classmethod
    def from_path(cls, source: str | Path, **kw) -> Predictor:
        """From a run folder, a bundle folder or a checkpoint file (see :func:`load_bundle`)."""
        model, bundle = load_bundle(source)
        return cls(model, bundle, **kw)

    def predict_array(self, image: np.ndarray, geometry: Geometry, attention: bool = False) -> Prediction:
        """Predict for ``image`` ``(C, *spatial)`` with its ``geometry``; see :class:`Prediction`."""
        expected = self.bundle.model_kwargs.get("in_channels")
        if expected is not None and image.shape[0] != expected:
            raise ValueError(f"the model expects {expected} channel(s), the image has {image.shape[0]}")
        res = self.pre.apply(image, geometry)
        x = torch.from_numpy(np.ascontiguousarray(res.image))
        maps: dict[str, torch.Tensor] = {}
        patch = self.bundle.patch_size
        fits = patch is None or all(s <= p for s, p in zip(x.shape[1:], patch, strict=False))
        if attention and not fits:
            log.warning("attention maps are only computed for inputs within the training patch; skipped")
        with flush_denormal():
            if self.task == "classification" or (attention and fits and has_attention(self.model)):
                logits, maps = predict_with_attention(self.model, x, self.amp)
            else:
                logits = predict_logits(self.model, x, patch, self.overlap, self.amp)
        if not attention:
            maps = {}
        att = {k: invert(v[0].cpu().numpy().astype(np.float32), res.record, kind="prob")[0] for k, v in maps.items()}
        probs = logits_to_probs(logits)[0].cpu().numpy().astype(np.float32)
        if self.task == "classification":
            label = self.label_set.decode(probs_to_indices(probs[:, None])[0])
            return Prediction(label=np.asarray(label), probs=probs, geometry=geometry, attention=att)
        probs_orig, geom = invert(probs, res.record, kind="prob")
        label = self.label_set.decode(probs_to_indices(probs_orig))
        return Prediction(label=label, probs=probs_orig, geometry=geom, attention=att)

    def predict_file(
        self,
        path: str | Path,
        out_dir: str | Path,
        probs: bool = False,
        attention: bool = False,
        suffix: str = "",
    ) -> dict[str, Path]:
        """Predict one file (or DICOM folder) and write the mask (and optional maps) into ``out_dir``.

        The mask has the input's name, format, size, spacing, origin and direction (JPEG inputs get PNG masks).
        Probability maps go to ``<name>_prob<ext>`` (PNG: scaled to 0..255), attention maps to
        ``<name>_att_<gate><ext>`` plus an overlay figure ``<name>_attention.png``.

        Raises:
            DataError: unreadable input, or an output path that would overwrite the input.
        """
        return self._predict_and_write(path, out_dir, probs, attention, suffix)[0]

    def _predict_and_write(
        self, path: str | Path, out_dir: str | Path, probs: bool = False, attention: bool = False, suffix: str = ""
    ) -> tuple[dict[str, Path], Prediction]:
        path = Path(path)
        image, geometry = read_image(path)
        pred = self.predict_array(image.astype(np.float32), geometry, attention=attention)
        return self._write(path, image, pred, out_dir, probs, attention, suffix), pred

    def _write(
        self, path: Path, image: np.ndarray, pred: Prediction, out_dir: str | Path, probs: bool, attention: bool,
        suffix: str,
    ) -> dict[str, Path]:  # fmt: skip
        written: dict[str, Path] = {}
        mask_path = mask_path_for(path, out_dir, suffix)
        if self.task == "classification":
            return self._write_attention(path, image, pred, mask_path, written) if attention else written
        written["mask"] = _safe_write(
            path, mask_path, pred.label, pred.geometry, mask=True, binary=self.label_set.binary
        )
        stem, ext = split_ext(mask_path)
        raster = pred.geometry.format in ("png", "jpg", "tiff", "bmp")
        if probs:
            fg = pred.probs[0] if pred.probs.shape[0] == 1 else pred.probs[1:].sum(0)
            arr = np.round(fg * 255).astype(np.uint8) if raster else fg.astype(np.float32)
            written["probs"] = _safe_write(path, mask_path.with_name(f"{stem}_prob{ext}"), arr, pred.geometry)
        return self._write_attention(path, image, pred, mask_path, written) if attention else written

    def _write_attention(
        self, path: Path, image: np.ndarray, pred: Prediction, mask_path: Path, written: dict[str, Path]
    ) -> dict[str, Path]:
        """Attention maps (``<name>_att_<gate><ext>``) and an overlay figure (``<name>_attention.png``)."""
        stem, ext = split_ext(mask_path)
        raster = pred.geometry.format in ("png", "jpg", "tiff", "bmp")
        if pred.attention:
            from agseg.viz.attention import plot_attention

            for name, a in pred.attention.items():
                m = a.mean(0)
                arr = np.round(m * 255).astype(np.uint8) if raster else m.astype(np.float32)
                target = mask_path.with_name(f"{stem}_att_{name}{ext}")
                written[f"attention_{name}"] = _safe_write(path, target, arr, pred.geometry)
            written["attention_figure"] = plot_attention(
                image, pred.attention, mask_path.with_name(f"{stem}_attention.png"),
                prediction=pred.label if pred.label.ndim else None, title=f"{path.name}: {self.bundle.model_name}",
            )  # fmt: skip
        return written

    def predict_paths(
        self, inputs: Sequence[str | Path], out_dir: str | Path, progress: bool = True, **kw
    ) -> list[dict[str, Path]]:
        """:meth:`predict_file` for every input (folders expanded), with a progress bar."""
        files = collect_inputs(inputs)
        results = []
        rows = []
        for p in tqdm(files, desc="predicting", unit="image", disable=None if progress and len(files) > 1 else True):
            written, pred = self._predict_and_write(p, out_dir, **kw)
            results.append(written)
            if self.task == "classification":
                rows.append(self.classification_row(split_ext(p)[0], pred))
        if rows:
            from agseg.metrics import write_csv

            results.append({"predictions": write_csv(rows, Path(out_dir) / "predictions.csv")})
        return results

    def classification_row(self, case_id: str, pred: Prediction) -> dict[str, object]:
        """``{case, predicted class, prob_<class> per class}`` for a classifier's prediction."""
        ls = self.label_set
        probs = pred.probs if pred.probs.shape[0] > 1 else np.array([1 - pred.probs[0], pred.probs[0]])
        row: dict[str, object] = {
            "case": case_id,
            "predicted": int(pred.label),
            "predicted_class": ls.name_of(int(pred.label)),
        }
        for v, p in zip(ls.values, probs, strict=True):
            row[f"prob_{ls.column_suffix(v) if v else ls.name_of(0)}"] = float(p)
        return row


def _safe_write(
    source: Path, target: Path, array: np.ndarray, geometry: Geometry, mask: bool = False, binary: bool | None = None
) -> Path:
    """Write through a temporary name and ``os.replace``; refuse to write over the input. ``mask``/``binary`` as
    :func:`~agseg.data.io.write_image` (the label set decides the encoding, never the pixels)."""
    if target.resolve() == source.resolve():
        raise DataError(target, "output would overwrite the input; choose another --out folder")
    target.parent.mkdir(parents=True, exist_ok=True)
    if target.suffix == "" and geometry.format == "dicom":  # a DICOM series folder
        return write_image(target, array, geometry, mask=mask, binary=binary)
    ext = split_ext(target)[1]
    if ext.lower() == ".mhd":  # header + .raw pair: written under a temporary name, then both moved
        tmp = target.with_name(f".{split_ext(target)[0]}.{os.getpid()}.tmp.mhd")
        try:
            _move_mhd(Path(write_image(tmp, array, geometry, mask=mask, binary=binary)), target)
        finally:
            tmp.unlink(missing_ok=True)
        return target
    with atomic_path(target, suffix=ext) as tmp:
        written = Path(write_image(tmp, array, geometry, mask=mask, binary=binary))
        if written != tmp:  # a JPEG mask written as PNG
            final = target.with_suffix(written.suffix)
            os.replace(written, final)
            return final
    return target


def _move_mhd(tmp_header: Path, final: Path) -> None:
    """Move a .mhd/.raw pair written under a temporary name to ``final`` (rewriting the data-file reference)."""
    text = tmp_header.read_text(encoding="latin-1")
    old_raw = None
    for line in text.splitlines():
        if line.startswith("ElementDataFile"):
            old_raw = line.split("=", 1)[1].strip()
    if old_raw and old_raw != "LOCAL":
        new_raw = final.with_suffix(Path(old_raw).suffix).name
        os.replace(tmp_header.parent / old_raw, final.parent / new_raw)
        text = text.replace(f"ElementDataFile = {old_raw}", f"ElementDataFile = {new_raw}")
    tmp = final.with_name(f".{final.name}.tmp")
    tmp.write_text(text, encoding="latin-1")
    os.replace(tmp, final)
    tmp_header.unlink(missing_ok=True)
