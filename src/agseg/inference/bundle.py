"""A trained model as a self-contained bundle: weights (safetensors) + what prediction needs (JSON).

``model.json`` holds the registry name and arguments of the net, the fitted preprocessing (so prediction applies
exactly what training applied, and can undo it), the label values behind the output channels, the training
patch size (for sliding windows), class names and provenance. ``model.safetensors`` holds the weights. Both are
plain data: loading a bundle executes nothing from the files.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from agseg.data.label_set import LabelSet
from agseg.data.preprocess import Preprocessor
from agseg.fileio import atomic_write_text
from agseg.nets.compat import legacy_model_kwargs
from agseg.nets.registry import create_model
from agseg.weights import load_checkpoint, load_state_dict_file, save_weights

__all__ = ["ModelBundle", "load_bundle"]


BUNDLE_JSON = "model.json"
BUNDLE_WEIGHTS = "model.safetensors"


@dataclass
class ModelBundle:
    """Everything prediction needs besides the weights.

    Attributes:
        model_name: registry name.
        model_kwargs: arguments of ``create_model`` (spatial_dims, in_channels, out_channels, channels, ...).
        preprocess: ``Preprocessor.to_dict()`` (config + fitted statistics).
        labels: label value of each class; ``[0, 1]`` for a binary net with one sigmoid output.
        patch_size: training patch (sliding windows for larger inputs); None when trained on whole images.
        class_names: ``{label: name}`` of the label set (None: no names).
        info: provenance (experiment name, data, epochs, CV performance, licence notes).
        task: ``"segmentation"`` or ``"classification"``.
        mirror_axes: spatial axes mirrored for test-time augmentation by default (``eval.mirror_axes``).
        postprocess: the post-processing chosen on the CV predictions (``{"keep_largest": {value: k}}``) or None.
        prune: the pruning level prediction uses by default (ANU-Net L1..L4); None: the full net.
        exclude_classes: output channels left out of the softmax in prediction (probability 0), those the training
            loss excluded (``train.loss_kwargs.exclude_classes``: seed 001's fine-tuning, AFT); None: none.
    """

    model_name: str
    model_kwargs: dict[str, Any]
    preprocess: dict[str, Any]
    labels: list[int] = field(default_factory=lambda: [0, 1])
    patch_size: list[int] | None = None
    class_names: dict[str, str] | None = None
    info: dict[str, Any] = field(default_factory=dict)
    task: str = "segmentation"
    mirror_axes: list[int] | None = None
    postprocess: dict[str, Any] | None = None
    prune: int | None = None
    exclude_classes: list[int] | None = None

    @property
    def label_set(self) -> LabelSet:
        """The :class:`~agseg.data.label_set.LabelSet` the net was trained for."""
        return LabelSet.from_bundle(self.labels, self.class_names)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ModelBundle:
        known = {k: d[k] for k in cls.__dataclass_fields__ if k in d}
        if "model_name" not in known or "model_kwargs" not in known or "preprocess" not in known:
            raise ValueError("model description lacks model_name, model_kwargs or preprocess")
        return cls(**known)

    def build(self) -> nn.Module:
        """The net, freshly initialised (load weights separately)."""
        return create_model(self.model_name, **self.model_kwargs)

    def preprocessor(self) -> Preprocessor:
        return Preprocessor.from_dict(self.preprocess)

    def save(self, folder: str | Path, model: nn.Module) -> Path:
        """Write ``model.json`` and ``model.safetensors`` into ``folder`` (atomically)."""
        folder = Path(folder)
        save_weights(model, folder / BUNDLE_WEIGHTS, metadata={"agseg_model": self.model_name})
        atomic_write_text(folder / BUNDLE_JSON, json.dumps(self.to_dict(), indent=2) + "\n")
        return folder


def load_bundle(source: str | Path, device: str | torch.device = "cpu") -> tuple[nn.Module, ModelBundle]:
    """Load a net ready for prediction from a bundle folder, a run folder, or a checkpoint file.

    Args:
        source: a folder with ``model.json`` + ``model.safetensors`` (a run directory has them at its top or in
            ``model/``), or a ``.pt`` checkpoint written by the trainer (its ``config`` entry holds the bundle).

    Raises:
        FileNotFoundError: nothing loadable at ``source`` (named in the message).
        ValueError: the files are not an agseg model (named in the message).
    """
    src = Path(source)
    if src.is_dir():
        for folder in (src, src / "model"):
            if (folder / BUNDLE_JSON).is_file():
                try:
                    bundle = ModelBundle.from_dict(json.loads((folder / BUNDLE_JSON).read_text(encoding="utf-8")))
                except (ValueError, TypeError, AttributeError) as err:  # bad JSON, wrong types, missing keys
                    raise ValueError(f"{folder / BUNDLE_JSON}: not a valid agseg model description ({err})") from None
                state = load_state_dict_file(folder / BUNDLE_WEIGHTS)
                break
        else:
            folds = sorted(d.name for d in src.glob("repeat*_fold*") if (d / "model" / BUNDLE_JSON).is_file())
            if folds:  # a CV folder: one model per fold
                raise FileNotFoundError(f"{src}: a cross-validation folder, one model per fold: name a fold "
                                        f"({src / folds[0]}; {len(folds)} with a model); `agseg predict --run "
                                        f"{src}` takes the CV itself (the ensemble of its folds)")  # fmt: skip
            raise FileNotFoundError(f"no {BUNDLE_JSON} in {src} or {src / 'model'}: not an agseg run or model folder")
    elif src.is_file():
        ckpt = load_checkpoint(src)
        bundle_dict = (ckpt.get("config") or {}).get("bundle")
        if not bundle_dict:
            raise ValueError(f"{src}: checkpoint has no model description (config.bundle)")
        try:
            bundle = ModelBundle.from_dict(bundle_dict)
        except (ValueError, TypeError, AttributeError) as err:
            raise ValueError(f"{src}: not a valid agseg model description ({err})") from None
        state = ckpt.get("model")
        if not isinstance(state, dict):
            raise ValueError(f"{src}: checkpoint holds no model weights")
    else:
        raise FileNotFoundError(f"model not found: {src}")
    where = src / BUNDLE_JSON if src.is_dir() else src
    try:
        bundle.label_set  # noqa: B018  (labels and class names must make a label set)
        bundle.preprocessor()
        model = bundle.build()
        legacy = legacy_model_kwargs(model, bundle.model_name, bundle.model_kwargs, state)
        if legacy is not None:  # saved under earlier defaults: rebuilt as trained
            bundle = ModelBundle.from_dict({**bundle.to_dict(), "model_kwargs": legacy})
            model = bundle.build()
    except (ValueError, TypeError, KeyError) as err:
        msg = err.args[0] if isinstance(err, KeyError) and err.args else err
        raise ValueError(f"{where}: the model description cannot be used: {msg}") from None
    try:
        model.load_state_dict(state)
    except RuntimeError as err:
        raise ValueError(f"{src}: weights do not fit {bundle.model_name}: {str(err).splitlines()[0]}") from None
    return model.to(device).eval(), bundle
