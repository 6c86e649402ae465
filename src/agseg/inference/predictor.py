"""Predict masks for images in any supported format, in the input's own grid and geometry.

read -> the bundle's preprocessing -> whole-image or sliding-window logits (bf16 autocast where it helps) ->
probabilities -> preprocessing undone (linear resampling of probabilities, then threshold/argmax) -> mask written
in the input's format with its spacing, origin and direction. Inputs are never overwritten.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from agseg.data.errors import DataError
from agseg.data.io import Geometry, split_ext, write_image
from agseg.data.preprocess import invert
from agseg.fileio import atomic_path
from agseg.inference.bundle import ModelBundle, load_bundle
from agseg.inference.inputs import PredictInput, collect_inputs
from agseg.inference.sliding import predict_logits, predict_with_attention
from agseg.nets.base import has_attention
from agseg.runtime import amp_dtype, flush_denormal, resolve_device
from agseg.tasks import logits_to_probs, probs_to_indices

__all__ = ["PredictInput", "Prediction", "Predictor", "collect_inputs"]

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
        dims = self.bundle.model_kwargs.get("spatial_dims")
        if dims is not None and image.ndim - 1 != dims:
            raise ValueError(
                f"a {image.ndim - 1}D image (shape {tuple(image.shape[1:])}) for a {dims}D model "
                f"({self.bundle.model_name}): give {dims}D inputs"
            )
        if expected is not None and image.shape[0] != expected:
            raise ValueError(
                f"the model expects {expected} channel(s), the image has {image.shape[0]}"
                + (" (an RGB image for a grey-level model?)" if image.shape[0] == 3 and expected == 1 else "")
            )
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
        path: str | Path | PredictInput,
        out_dir: str | Path,
        probs: bool = False,
        attention: bool = False,
        suffix: str = "",
        overwrite: bool = False,
    ) -> dict[str, Path]:
        """Predict one case (a file, a DICOM folder, or a :class:`PredictInput` of channel files) and write the mask
        (and optional maps) into ``out_dir``.

        The mask has the input's name, format, size, spacing, origin and direction (JPEG inputs get PNG masks).
        Probability maps go to ``<name>_prob<ext>`` (PNG: scaled to 0..255), attention maps to
        ``<name>_att_<gate><ext>`` plus an overlay figure ``<name>_attention.png``.

        Raises:
            DataError: unreadable or non-finite input, an image the model cannot take (channels, dimensions), an
                output that exists (without ``overwrite``) or would overwrite the input; the message names the file.
        """
        case = path if isinstance(path, PredictInput) else collect_inputs([path], self.in_channels, self.patterns)[0]
        return self._predict_and_write(case, out_dir, probs, attention, suffix, overwrite)[0]

    @property
    def in_channels(self) -> int:
        return int(self.bundle.model_kwargs.get("in_channels") or 1)

    @property
    def patterns(self) -> list[str] | None:
        """Channel file patterns of case folders, from the training layout (``data.options.channels``)."""
        return self.bundle.info.get("channel_patterns")

    def outputs(self, case: PredictInput, out_dir: str | Path, probs: bool, attention: bool, suffix: str) -> list[Path]:
        """The files :meth:`predict_file` writes for ``case`` (attention maps per gate aside)."""
        mask = case.output(out_dir, suffix)
        stem, ext = split_ext(mask)
        out = [] if self.task == "classification" else [mask]
        if probs and self.task != "classification":
            out.append(mask.with_name(f"{stem}_prob{ext}"))
        if attention:
            out.append(mask.with_name(f"{stem}_attention.png"))
        return out

    def _load(self, case: PredictInput) -> tuple[np.ndarray, Geometry]:
        from agseg.data.cases import CaseRef

        loaded = CaseRef(case.name, case.paths).load(with_mask=False)  # checks channels' geometry, NaN/Inf voxels
        return loaded.image, loaded.geometry

    def _predict_and_write(
        self, case: PredictInput, out_dir: str | Path, probs: bool = False, attention: bool = False, suffix: str = "",
        overwrite: bool = False,
    ) -> tuple[dict[str, Path], Prediction]:  # fmt: skip
        image, geometry = self._load(case)
        try:
            pred = self.predict_array(image.astype(np.float32), geometry, attention=attention)
        except ValueError as err:
            raise DataError(case.source, str(err)) from None
        return self._write(case, image, pred, out_dir, probs, attention, suffix, overwrite), pred

    def _write(
        self, case: PredictInput, image: np.ndarray, pred: Prediction, out_dir: str | Path, probs: bool,
        attention: bool, suffix: str, overwrite: bool,
    ) -> dict[str, Path]:  # fmt: skip
        written: dict[str, Path] = {}
        path = case.source
        mask_path = case.output(out_dir, suffix)
        if self.task == "classification":
            return self._write_attention(case, image, pred, mask_path, written, overwrite) if attention else written
        written["mask"] = _safe_write(
            path, mask_path, pred.label, pred.geometry, mask=True, binary=self.label_set.binary, overwrite=overwrite
        )
        stem, ext = split_ext(mask_path)
        raster = pred.geometry.format in ("png", "jpg", "tiff", "bmp")
        if probs:
            fg = pred.probs[0] if pred.probs.shape[0] == 1 else pred.probs[1:].sum(0)
            arr = np.round(fg * 255).astype(np.uint8) if raster else fg.astype(np.float32)
            target = mask_path.with_name(f"{stem}_prob{ext}")
            written["probs"] = _safe_write(path, target, arr, pred.geometry, overwrite=overwrite)
        return self._write_attention(case, image, pred, mask_path, written, overwrite) if attention else written

    def _write_attention(
        self, case: PredictInput, image: np.ndarray, pred: Prediction, mask_path: Path, written: dict[str, Path],
        overwrite: bool,
    ) -> dict[str, Path]:  # fmt: skip
        """Attention maps (``<name>_att_<gate><ext>``) and an overlay figure (``<name>_attention.png``)."""
        stem, ext = split_ext(mask_path)
        raster = pred.geometry.format in ("png", "jpg", "tiff", "bmp")
        if pred.attention:
            from agseg.viz.attention import plot_attention

            for name, a in pred.attention.items():
                m = a.mean(0)
                arr = np.round(m * 255).astype(np.uint8) if raster else m.astype(np.float32)
                target = mask_path.with_name(f"{stem}_att_{name}{ext}")
                written[f"attention_{name}"] = _safe_write(case.source, target, arr, pred.geometry, overwrite=overwrite)
            figure = mask_path.with_name(f"{stem}_attention.png")
            _check_target(case.source, figure, overwrite)
            written["attention_figure"] = plot_attention(
                image, pred.attention, figure, prediction=pred.label if pred.label.ndim else None,
                title=f"{case.name}: {self.bundle.model_name}",
            )  # fmt: skip
        return written

    def plan(
        self, inputs: Sequence[str | Path], out_dir: str | Path, probs: bool = False, attention: bool = False,
        suffix: str = "", overwrite: bool = False,
    ) -> list[PredictInput]:  # fmt: skip
        """The cases of ``inputs``, after checking every output they would write, before any work.

        Raises:
            DataError: an output that exists (without ``overwrite``), would overwrite an input, two cases writing one
                output, or ``out_dir`` being a dataset's mask folder beside the inputs.
        """
        cases = collect_inputs(inputs, self.in_channels, self.patterns)
        out = Path(out_dir)
        _check_not_mask_folder(out, cases)
        targets: dict[Path, PredictInput] = {}
        for case in cases:
            for t in self.outputs(case, out, probs, attention, suffix):
                key = t.resolve()
                if key in targets:
                    raise DataError(
                        case.source, f"writes {t} as {targets[key].source} does; use separate --out folders"
                    )
                targets[key] = case
                _check_target(case.source, t, overwrite, cases)
        if self.task == "classification":
            _check_target(cases[0].source, out / "predictions.csv", overwrite, cases)
        return cases

    def predict_paths(
        self, inputs: Sequence[str | Path], out_dir: str | Path, progress: bool = True, overwrite: bool = False, **kw
    ) -> list[dict[str, Path]]:
        """:meth:`predict_file` for every case of ``inputs`` (folders expanded; outputs checked first, see
        :meth:`plan`), with a progress bar."""
        cases = self.plan(inputs, out_dir, overwrite=overwrite, **kw)
        results = []
        rows = []
        bar = tqdm(cases, desc="predicting", unit="case", disable=None if progress and len(cases) > 1 else True)
        for case in bar:
            written, pred = self._predict_and_write(case, out_dir, overwrite=overwrite, **kw)
            results.append(written)
            if self.task == "classification":
                rows.append(self.classification_row(case.name, pred))
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


def _check_target(source: Path, target: Path, overwrite: bool, inputs: Sequence[PredictInput] = ()) -> None:
    """Refuse an output that is an input (or inside an input DICOM folder), or that exists without ``overwrite``."""
    t = target.resolve()
    for src in [source, *(p for c in inputs for p in c.paths)]:
        s = Path(src).resolve()
        if t == s or (s.is_dir() and s in t.parents):
            raise DataError(target, f"output would overwrite the input {src}; choose another --out folder")
    if target.exists() and not overwrite:
        raise DataError(
            target, "exists already: not overwritten (pass --overwrite to replace it, or choose another --out)"
        )


def _check_not_mask_folder(out: Path, cases: Sequence[PredictInput]) -> None:
    """Refuse ``--out`` being the mask/label folder of the dataset the inputs come from (``images/`` beside
    ``masks/``): predictions there would sit among, or replace, the ground truth."""
    from agseg.data.layouts.folders import MASK_DIR_NAMES

    names = {n.lower() for n in MASK_DIR_NAMES} | {"labelstr", "labelsts"}
    o = out.resolve()
    if o.name.lower() not in names or not o.is_dir():
        return
    for c in cases:
        images = Path(c.source).resolve().parent
        if images.parent == o.parent:
            raise DataError(out, f"is the mask folder beside the input folder {images}; write predictions elsewhere")


def _safe_write(
    source: Path, target: Path, array: np.ndarray, geometry: Geometry, mask: bool = False, binary: bool | None = None,
    overwrite: bool = False,
) -> Path:  # fmt: skip
    """Write through a temporary name and ``os.replace``; refuse to write over the input, or over an existing file
    unless ``overwrite``. ``mask``/``binary`` as :func:`~agseg.data.io.write_image` (the label set decides the
    encoding, never the pixels). A DICOM series goes to a new folder, moved into place when complete."""
    _check_target(source, target, overwrite)
    target.parent.mkdir(parents=True, exist_ok=True)
    if target.suffix == "" and geometry.format == "dicom":  # a DICOM series folder
        return _write_dicom_folder(target, array, geometry, mask, binary)
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


def _write_dicom_folder(target: Path, array: np.ndarray, geometry: Geometry, mask: bool, binary: bool | None) -> Path:
    """A DICOM series written into a new temporary folder, then moved into place (an existing folder is replaced
    only after the new series is complete; nothing else in it is touched before)."""
    import shutil
    import tempfile

    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        write_image(tmp, array, geometry, mask=mask, binary=binary)
        if target.exists():
            old = target.with_name(f".{target.name}.old.{os.getpid()}")
            os.replace(target, old)
            os.replace(tmp, target)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target
