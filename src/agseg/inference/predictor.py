"""Predict masks for images in any supported format, in the input's own grid and geometry.

read -> the bundle's preprocessing -> whole-image or sliding-window logits (bf16 autocast where it helps) ->
probabilities -> preprocessing undone (linear resampling of probabilities, then threshold/argmax) -> mask written
in the input's format with its spacing, origin and direction. Inputs are never overwritten.

A classifier writes ``predictions.csv`` (case, predicted class, ``prob_<class>``); one with attention gates
(AG-Sononet) also writes, for every image, its attention maps, the boxes :func:`agseg.localise` draws from them
(``boxes.csv``: ``case, gate, y0, x0, y1, x1, consistent`` in the input's pixel grid, array order, ``y1``/``x1``
exclusive; ``gate`` is ``box`` for the final box and the gate's name for each gate's own) and an overlay
``<name>_boxes.png`` (the image with the final box in red and each gate's box in a thin colour).
"""

from __future__ import annotations

import copy
import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from itertools import combinations
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from agseg.data.errors import DataError
from agseg.data.io import Geometry, split_ext, write_image
from agseg.data.preprocess import invert
from agseg.fileio import atomic_path
from agseg.inference.bundle import ModelBundle, load_bundle
from agseg.inference.inputs import PredictInput, collect_inputs
from agseg.inference.postprocess import apply_postprocessing
from agseg.inference.sliding import predict_logits, predict_with_attention
from agseg.nets.base import has_attention, prune_model, spatial_dims_of
from agseg.nets.fuse import fold_batchnorm, fuse_conv_relu
from agseg.runtime import amp_dtype, flush_denormal, memory_format_for, resolve_device
from agseg.tasks import logits_to_probs, probs_to_indices

__all__ = ["ENGINES", "PredictInput", "Prediction", "Predictor", "collect_inputs"]

ENGINES = ("torch", "onnxruntime")

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
        localisation: a gated classifier's boxes (:class:`~agseg.inference.localise.Localisation`, on the input's
            pixel grid), or None.
    """

    label: np.ndarray
    probs: np.ndarray
    geometry: Geometry
    attention: dict[str, np.ndarray] = field(default_factory=dict)
    localisation: Any = None


def _needs_layout(model: torch.nn.Module, fmt: torch.memory_format) -> bool:
    """Whether a convolution weight of ``model`` is not held in ``fmt`` yet."""
    return any(p.dim() in (4, 5) and not p.is_contiguous(memory_format=fmt) for p in model.parameters())


class Predictor:
    """Applies a trained bundle to arrays or files.

    Args:
        model: the net (eval mode is set here).
        bundle: its :class:`~agseg.inference.bundle.ModelBundle`.
        device: ``"auto"``, ``"cpu"``, ``"cuda"`` or ``"cuda:N"``.
        amp: ``"auto"`` (bf16 on CPUs with AMX/AVX-512 bf16 and on CUDA devices that have it, fp16 on CUDA devices
            without it), ``"bf16"``, ``"fp16"`` or ``"off"``.
        overlap: sliding-window overlap.
        mirror_axes: test-time augmentation by mirroring these spatial axes (array order, 0 the first spatial
            axis; every subset is predicted and the probabilities averaged); None: the bundle's ``mirror_axes``;
            ``()``: off.
        postprocess: the post-processing of label maps (:mod:`agseg.inference.postprocess`): True for the
            bundle's, False for none, or a decision ``{"keep_largest": {value: k}}``.
        prune: predict with the net pruned to this level (ANU-Net L1..L4: fewer parameters, faster); None: the
            bundle's ``prune`` (by default the full net); 0: the full net.
        fold_bn: predict with a copy of the net whose batch norms are folded into the convolutions before them
            (:func:`agseg.nets.fuse.fold_batchnorm`: same outputs up to float rounding, faster) and, on the CPU,
            each convolution and the ReLU after it made one oneDNN call (:func:`agseg.nets.fuse.fuse_conv_relu`);
            the given ``model`` is left untouched.
        channels_last: hold the net's weights in the channels-last memory format (``channels_last`` /
            ``channels_last_3d``), so its convolutions run channels-last (oneDNN's faster layout: fp32 inference of
            the shipped models 1.17-1.57x faster on a CPU, ``benchmarks/predict_layout.py``); the outputs are
            the same up to float rounding. None (default): on CPUs only (not measured on CUDA). A net without
            convolution weights (an ONNX model) is left as it is.
    """

    def __init__(
        self,
        model: torch.nn.Module,
        bundle: ModelBundle,
        device: str = "auto",
        amp: str = "auto",
        overlap: float = 0.5,
        mirror_axes: Sequence[int] | None = None,
        postprocess: Mapping[str, Any] | bool | None = True,
        prune: int | None = None,
        fold_bn: bool = True,
        channels_last: bool | None = None,
    ) -> None:
        self.device = resolve_device(device)
        given = model
        level = bundle.prune if prune is None else prune
        if level:  # ANU-Net: a standalone smaller net that computes only the level-L output
            model = prune_model(model, int(level))
        self.prune = int(level) if level else None
        if fold_bn and any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in model.modules()):
            model, _ = fold_batchnorm(model)  # a copy: the caller's net (e.g. a trainer's) keeps its norms
            if self.device.type == "cpu":  # each conv + ReLU as one oneDNN call (the copy is changed in place)
                model, _ = fuse_conv_relu(model, inplace=True)
        use_layout = self.device.type == "cpu" if channels_last is None else channels_last
        fmt = memory_format_for(spatial_dims_of(model)) if use_layout else None
        if fmt is not None and _needs_layout(model, fmt):
            # Module.to(...) works in place: convert a copy unless fold_batchnorm / pruning made one
            model = (model if model is not given else copy.deepcopy(model)).to(self.device, memory_format=fmt)
        self.model = model.to(self.device).eval()
        self.bundle = bundle
        n_out = int(bundle.model_kwargs.get("out_channels") or len(bundle.labels))
        bad = [c for c in bundle.exclude_classes or () if not 0 <= int(c) < n_out or n_out == 1]
        if bad:
            raise ValueError(f"exclude_classes {bad} of {bundle.model_name}: the net has output channels 0..{n_out - 1}"
                             + (" (one sigmoid output: nothing to exclude)" if n_out == 1 else ""))  # fmt: skip
        self.pre = bundle.preprocessor()
        self.amp = amp_dtype(amp, self.device)
        self.overlap = overlap
        self.label_set = bundle.label_set
        self.labels = np.asarray(self.label_set.values)
        self.task = bundle.task
        #: spatial axes (array order) mirrored for test-time augmentation; default: the bundle's
        self.mirror_axes = (
            tuple(bundle.mirror_axes or ()) if mirror_axes is None else tuple(int(a) for a in mirror_axes)
        )
        #: the post-processing applied to label maps: the bundle's (True), none (False/None), or a given one
        self.postprocess = bundle.postprocess if postprocess is True else (postprocess or None)

    @classmethod
    def from_path(cls, source: str | Path, engine: str = "torch", **kw) -> Predictor:
        """From a run folder, a bundle folder or a checkpoint file (see :func:`load_bundle`); a cross-validation
        folder gives the :class:`EnsemblePredictor` of its folds' models (with the CV's post-processing).
        ``engine="onnxruntime"``: the ``model.onnx`` of a folder written by ``agseg export`` computes the net
        (CPU, float32; no attention maps)."""
        if engine not in ENGINES:
            raise ValueError(f"unknown engine {engine!r}; valid: {', '.join(ENGINES)}")
        if engine == "onnxruntime":
            from agseg.inference.export import OnnxModel, find_onnx

            path, bundle = find_onnx(source)
            prune = kw.pop("prune", None)
            if prune is not None and (prune or None) != bundle.prune:
                raise ValueError(
                    f"{path} was exported at pruning level {bundle.prune or 0} (0: the full net); export again with "
                    f"--prune {prune}"
                )
            kw.update(device="cpu", amp="off")
            return cls(OnnxModel(path, bundle), bundle, prune=0, **kw)
        if cv_fold_runs(source):
            return EnsemblePredictor.from_paths([source], **kw)
        model, bundle = load_bundle(source)
        return cls(model, bundle, **kw)

    @classmethod
    def from_paths(cls, sources: Sequence[str | Path], engine: str = "torch", **kw) -> Predictor:
        """One source as :meth:`from_path`; several: the ensemble of all their models (PyTorch engine only)."""
        if len(sources) == 1:
            return cls.from_path(sources[0], engine=engine, **kw)
        if engine != "torch":
            raise ValueError(f"--engine {engine} predicts with one exported model; an ensemble needs --engine torch")
        return EnsemblePredictor.from_paths(sources, **kw)

    def check_image(self, image: np.ndarray) -> None:
        """Raise a ``ValueError`` when ``image`` ``(C, *spatial)`` has the wrong dimensions or channels."""
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

    def _logits(self, x: torch.Tensor, with_maps: bool) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        patch = self.bundle.patch_size
        with flush_denormal():
            if with_maps:
                return predict_with_attention(self.model, x, self.amp)
            return predict_logits(self.model, x, patch, self.overlap, self.amp), {}

    def probabilities(
        self,
        image: np.ndarray,
        geometry: Geometry,
        attention: bool = False,
        grid: str = "original",
        prepared: Any = None,
    ) -> tuple[np.ndarray, Geometry, dict[str, np.ndarray]]:
        """Class probabilities on the input's grid, ``(K, *spatial)`` (a classifier: ``(K,)``), its geometry, and the
        attention maps when asked for; averaged over the mirrorings of :attr:`mirror_axes` (test-time augmentation:
        every subset of those axes flipped, the probabilities flipped back, as nnU-Net does). ``grid="working"``:
        on the preprocessed grid instead (no mapping back; its geometry). ``prepared``: ``self.pre.apply(image,
        geometry)`` when the caller has it already (it is not computed again)."""
        if grid not in ("original", "working"):
            raise ValueError(f"grid must be 'original' or 'working', got {grid!r}")
        self.check_image(image)
        res = prepared if prepared is not None else self.pre.apply(image, geometry)
        x = torch.from_numpy(np.ascontiguousarray(res.image))
        patch = self.bundle.patch_size
        fits = patch is None or all(s <= p for s, p in zip(x.shape[1:], patch, strict=False))
        if attention and not fits:
            log.warning("attention maps are only computed for inputs within the training patch; skipped")
        if attention and not has_attention(self.model):
            log.warning("%s has no attention gates: no attention maps to write", self.bundle.model_name)
        with_maps = self.task == "classification" or (attention and fits and has_attention(self.model))
        logits, maps = self._logits(x, with_maps)
        probs = logits_to_probs(logits, self.bundle.exclude_classes)[0]
        flips = _flip_sets(self.mirror_axes, x.ndim - 1)
        for axes in flips:
            dims = [a + 1 for a in axes]
            flipped, _ = self._logits(torch.flip(x, dims), self.task == "classification")
            p = logits_to_probs(flipped, self.bundle.exclude_classes)[0]
            probs = probs + (torch.flip(p, dims) if self.task != "classification" else p)
        probs = (probs / (1 + len(flips))).cpu().numpy().astype(np.float32)
        att = {}
        if attention:
            att = {
                k: invert(v[0].cpu().numpy().astype(np.float32), res.record, kind="prob")[0] for k, v in maps.items()
            }
        if self.task == "classification":
            return probs, geometry, att
        if grid == "working":
            return probs, res.record.geometry, {k: v[0].cpu().numpy().astype(np.float32) for k, v in maps.items()}
        probs_orig, geom = invert(probs, res.record, kind="prob")
        return probs_orig, geom, att

    def predict_array(self, image: np.ndarray, geometry: Geometry, attention: bool = False) -> Prediction:
        """Predict for ``image`` ``(C, *spatial)`` with its ``geometry``: probabilities (:meth:`probabilities`),
        labels from them, and the bundle's post-processing; see :class:`Prediction`."""
        probs, geom, att = self.probabilities(image, geometry, attention)
        return self.prediction(probs, geom, att)

    def predict_known_case(
        self, image: np.ndarray, geometry: Geometry, mask: np.ndarray | None, attention: bool = False
    ) -> Prediction:
        """:meth:`predict_array` for a case of a dataset, whose mask is known: a model trained with
        ``preprocess.crop_to_mask`` sees the image cropped to it (other models ignore the mask)."""
        crop = self.pre.config.crop_to_mask is not None
        prepared = self.pre.apply(image, geometry, mask) if crop else None
        return self.prediction(*self.probabilities(image, geometry, attention, prepared=prepared))

    def prediction(self, probs: np.ndarray, geometry: Geometry, attention: dict[str, np.ndarray]) -> Prediction:
        """A :class:`Prediction` from probabilities: labels by the label set, then :attr:`postprocess`."""
        if self.task == "classification":
            label = self.label_set.decode(probs_to_indices(probs[:, None])[0])
            return Prediction(label=np.asarray(label), probs=probs, geometry=geometry, attention=attention)
        label = apply_postprocessing(self.label_set.decode(probs_to_indices(probs)), self.postprocess)
        return Prediction(label=label, probs=probs, geometry=geometry, attention=attention)

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
        if attention or self.gated_classifier:
            out.append(mask.with_name(f"{stem}_attention.png"))
        if self.gated_classifier and self.bundle.model_kwargs.get("spatial_dims", 2) == 2:
            out.append(mask.with_name(f"{stem}_boxes.png"))
        return out

    @property
    def gated_classifier(self) -> bool:
        """A classifier with attention gates: its predictions come with maps and boxes (:func:`agseg.localise`)."""
        return self.task == "classification" and has_attention(self.model)

    def _load(self, case: PredictInput) -> tuple[np.ndarray, Geometry]:
        from agseg.data.cases import CaseRef

        loaded = CaseRef(case.name, case.paths).load(with_mask=False)  # checks channels' geometry, NaN/Inf voxels
        return loaded.image, loaded.geometry

    def _predict_and_write(
        self, case: PredictInput, out_dir: str | Path, probs: bool = False, attention: bool = False, suffix: str = "",
        overwrite: bool = False,
    ) -> tuple[dict[str, Path], Prediction]:  # fmt: skip
        image, geometry = self._load(case)
        attention = attention or self.gated_classifier
        try:
            pred = self.predict_array(image.astype(np.float32), geometry, attention=attention)
        except ValueError as err:
            raise DataError(case.source, str(err)) from None
        if self.gated_classifier and pred.attention:
            from agseg.inference.localise import localise

            pred.localisation = localise(pred.attention, image.shape[1:], spatial_dims=image.ndim - 1)
        return self._write(case, image, pred, out_dir, probs, attention, suffix, overwrite), pred

    def _write(
        self, case: PredictInput, image: np.ndarray, pred: Prediction, out_dir: str | Path, probs: bool,
        attention: bool, suffix: str, overwrite: bool,
    ) -> dict[str, Path]:  # fmt: skip
        written: dict[str, Path] = {}
        path = case.source
        mask_path = case.output(out_dir, suffix)
        if self.task == "classification":
            if attention:
                self._write_attention(case, image, pred, mask_path, written, overwrite)
            if pred.localisation is not None and image.ndim == 3:
                stem = split_ext(mask_path)[0]
                target = mask_path.with_name(f"{stem}_boxes.png")
                _check_target(case.source, target, overwrite)
                written["boxes_figure"] = write_boxes_overlay(image, pred.localisation, target)
            return written
        written["mask"] = safe_write(
            path, mask_path, pred.label, pred.geometry, mask=True, binary=self.label_set.binary, overwrite=overwrite
        )
        stem, ext = split_ext(mask_path)
        raster = pred.geometry.format in ("png", "jpg", "tiff", "bmp")
        if probs:
            fg = pred.probs[0] if pred.probs.shape[0] == 1 else pred.probs[1:].sum(0)
            arr = np.round(fg * 255).astype(np.uint8) if raster else fg.astype(np.float32)
            target = mask_path.with_name(f"{stem}_prob{ext}")
            written["probs"] = safe_write(path, target, arr, pred.geometry, overwrite=overwrite)
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
                written[f"attention_{name}"] = safe_write(case.source, target, arr, pred.geometry, overwrite=overwrite)
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
            ValueError: the model crops its inputs to their masks (``preprocess.crop_to_mask``), which new images
                do not have.
        """
        if self.pre.config.crop_to_mask is not None:
            raise ValueError(
                "this model was trained on images cropped to their masks (preprocess.crop_to_mask), and agseg "
                "predict has no mask for a new image: score it on a dataset with masks (agseg cv, agseg evaluate)"
            )
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
        if self.gated_classifier:
            _check_target(cases[0].source, out / "boxes.csv", overwrite, cases)
        return cases

    def predict_paths(
        self, inputs: Sequence[str | Path], out_dir: str | Path, progress: bool = True, overwrite: bool = False, **kw
    ) -> list[dict[str, Path]]:
        """:meth:`predict_file` for every case of ``inputs`` (folders expanded; outputs checked first, see
        :meth:`plan`), with a progress bar."""
        cases = self.plan(inputs, out_dir, overwrite=overwrite, **kw)
        results = []
        rows, box_rows = [], []
        bar = tqdm(cases, desc="predicting", unit="case", disable=None if progress and len(cases) > 1 else True)
        for case in bar:
            written, pred = self._predict_and_write(case, out_dir, overwrite=overwrite, **kw)
            results.append(written)
            if self.task == "classification":
                rows.append(self.classification_row(case.name, pred))
            if pred.localisation is not None:
                box_rows += box_rows_of(case.name, pred.localisation)
        if rows:
            from agseg.metrics import write_csv

            tables = {"predictions": write_csv(rows, Path(out_dir) / "predictions.csv")}
            if self.gated_classifier:
                tables["boxes"] = write_boxes_csv(box_rows, Path(out_dir) / "boxes.csv", dims=self._dims)
            results.append(tables)
        return results

    @property
    def _dims(self) -> int:
        return int(self.bundle.model_kwargs.get("spatial_dims") or 2)

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
            row[f"prob_{ls.column_suffix(v)}"] = float(p)
        return row


#: names of the box coordinates in ``boxes.csv`` per number of spatial axes (array order)
BOX_AXES = {2: ("y", "x"), 3: ("z", "y", "x")}
#: outline colours of each gate's box in ``<name>_boxes.png`` (the final box is red)
_GATE_COLOURS = ((0, 200, 255), (255, 220, 0), (60, 255, 60), (255, 0, 255))


def box_rows_of(case: str, localisation: Any) -> list[dict[str, Any]]:
    """``boxes.csv`` rows of one case: the final box (``gate = "box"``, empty coordinates when none was found), then
    each gate's own box where it has one."""
    rows = [{"case": case, "gate": "box", "box": localisation.box, "consistent": int(localisation.consistent)}]
    rows += [
        {"case": case, "gate": name, "box": b, "consistent": int(localisation.consistent)}
        for name, b in localisation.boxes.items()
        if b is not None
    ]
    return rows


def write_boxes_csv(rows: Sequence[Mapping[str, Any]], path: Path, dims: int = 2) -> Path:
    """``case, gate, y0, x0, y1, x1, consistent`` (``z0 ...`` in 3D), written atomically."""
    import csv
    import io

    from agseg.fileio import atomic_write_text

    axes = BOX_AXES.get(dims, tuple(f"a{i}" for i in range(dims)))
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["case", "gate", *(f"{a}0" for a in axes), *(f"{a}1" for a in axes), "consistent"])
    for r in rows:
        box = r["box"]
        coords = list(box.as_tuple()) if box is not None else [""] * (2 * len(axes))
        w.writerow([r["case"], r["gate"], *coords, r["consistent"]])
    return Path(atomic_write_text(path, buf.getvalue()))


def boxes_overlay(image: np.ndarray, localisation: Any) -> np.ndarray:
    """The first channel of ``image`` ``(C, H, W)`` as an RGB ``uint8`` picture (1st-99th percentile stretch) with the
    final box outlined in red and each gate's box in a thinner colour."""
    img = np.asarray(image[0] if image.ndim == 3 else image, dtype=np.float64)
    lo, hi = np.percentile(img, [1, 99]) if img.size else (0.0, 1.0)
    grey = np.clip((img - lo) / (hi - lo if hi > lo else 1.0), 0, 1) * 255
    rgb = np.repeat(grey.round().astype(np.uint8)[..., None], 3, axis=2)
    t = max(1, round(max(img.shape) / 256))

    def outline(box: Any, colour: tuple[int, int, int], width: int) -> None:
        (y0, x0), (y1, x1) = box.start, box.stop
        for k in range(width):
            ya, yb = min(y0 + k, y1 - 1), max(y1 - 1 - k, y0)
            xa, xb = min(x0 + k, x1 - 1), max(x1 - 1 - k, x0)
            rgb[ya, x0:x1] = rgb[yb, x0:x1] = colour
            rgb[y0:y1, xa] = rgb[y0:y1, xb] = colour

    for i, b in enumerate(localisation.boxes.values()):
        if b is not None:
            outline(b, _GATE_COLOURS[i % len(_GATE_COLOURS)], t)
    if localisation.box is not None:
        outline(localisation.box, (255, 0, 0), 2 * t)
    return rgb


def write_boxes_overlay(image: np.ndarray, localisation: Any, path: Path) -> Path:
    """:func:`boxes_overlay` written as a PNG, atomically."""
    from PIL import Image

    with atomic_path(path, suffix=".png") as tmp:
        Image.fromarray(boxes_overlay(image, localisation)).save(tmp, format="PNG")
    return path


def cv_fold_runs(source: str | Path) -> list[Path]:
    """The finished fold runs (``repeat{r}_fold{f}/model``) of a cross-validation folder; empty for anything else."""
    src = Path(source)
    if not src.is_dir() or (src / "model.json").is_file() or (src / "model" / "model.json").is_file():
        return []
    return sorted(d for d in src.glob("repeat*_fold*") if (d / "model" / "model.json").is_file())


class EnsemblePredictor(Predictor):
    """Several models of one task and label set as one predictor: the mean of their probabilities on the input's
    grid (nnU-Net's fold ensemble), then labels and post-processing as for one model.

    Each member applies its own preprocessing (folds may fit different statistics) and mirroring; attention maps
    come from the first member.

    Args:
        members: the predictors (same task, label set, input channels and dimensions).
        postprocess: the ensemble's post-processing decision (a CV's ``postprocessing.json``), or None.
    """

    def __init__(self, members: Sequence[Predictor], postprocess: Mapping[str, Any] | None = None) -> None:
        if not members:
            raise ValueError("an ensemble needs at least one model")
        first = members[0]
        for m in members[1:]:
            if m.task != first.task or m.label_set.values != first.label_set.values:
                raise ValueError(
                    f"cannot ensemble {m.bundle.model_name} ({m.task}, labels {list(m.label_set.values)}) with "
                    f"{first.bundle.model_name} ({first.task}, labels {list(first.label_set.values)})"
                )
            for key in ("in_channels", "spatial_dims"):
                if m.bundle.model_kwargs.get(key) != first.bundle.model_kwargs.get(key):
                    raise ValueError(f"cannot ensemble models with different {key}")
        self.members = list(members)
        self.model, self.bundle, self.device = first.model, first.bundle, first.device
        self.pre, self.amp, self.overlap = first.pre, first.amp, first.overlap
        self.label_set, self.labels, self.task = first.label_set, first.labels, first.task
        self.mirror_axes, self.prune = first.mirror_axes, first.prune
        self.postprocess = dict(postprocess) if postprocess else None

    @classmethod
    def from_paths(cls, sources: Sequence[str | Path], postprocess: Any = True, **kw) -> EnsemblePredictor:
        """The models of ``sources`` (CV folders expand to their folds; run, bundle or checkpoint paths are one
        model each). The post-processing is the CV's (``postprocessing.json``) for one CV folder, else none.

        Raises:
            FileNotFoundError: a CV folder without a finished fold.
        """
        members: list[Predictor] = []
        for src in sources:
            folds = cv_fold_runs(src)
            paths = folds or [Path(src)]
            if not paths:
                raise FileNotFoundError(f"{src}: no finished fold (repeat*_fold*/model)")
            for p in paths:
                model, bundle = load_bundle(p)
                members.append(Predictor(model, bundle, postprocess=False, **kw))
        decision = None
        if postprocess is True and len(sources) == 1 and (Path(sources[0]) / "postprocessing.json").is_file():
            import json

            decision = json.loads((Path(sources[0]) / "postprocessing.json").read_text(encoding="utf-8"))
        elif isinstance(postprocess, Mapping):
            decision = dict(postprocess)
        log.info("ensemble of %d model(s) from %s", len(members), ", ".join(map(str, sources)))
        return cls(members, decision)

    def probabilities(
        self,
        image: np.ndarray,
        geometry: Geometry,
        attention: bool = False,
        grid: str = "original",
        prepared: Any = None,
    ) -> tuple[np.ndarray, Geometry, dict[str, np.ndarray]]:
        probs, geom, att = self.members[0].probabilities(image, geometry, attention, grid=grid, prepared=prepared)
        for m in self.members[1:]:
            p, _, _ = m.probabilities(image, geometry, False, grid=grid)  # each member its own preprocessing
            if p.shape != probs.shape:  # members preprocessed differently: no common working grid
                raise ValueError(f"the ensemble's models predict on different grids ({p.shape} vs {probs.shape})")
            probs = probs + p
        return probs / len(self.members), geom, att


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


def safe_write(
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


def _flip_sets(axes: Sequence[int], spatial_dims: int) -> list[tuple[int, ...]]:
    """Every non-empty subset of the mirroring ``axes`` (checked against ``spatial_dims``)."""
    bad = [a for a in axes if not 0 <= a < spatial_dims]
    if bad:
        raise ValueError(f"mirror axes {bad} out of range for {spatial_dims}D images (0..{spatial_dims - 1})")
    uniq = sorted(set(axes))
    return [c for r in range(1, len(uniq) + 1) for c in combinations(uniq, r)]
