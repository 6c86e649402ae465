"""agseg: attention-gated networks for medical image segmentation, in 2D and 3D.

Public API::

    import agseg
    net = agseg.create_model("attention_unet", spatial_dims=3, in_channels=1, out_channels=3,
                             channels=(16, 32, 64, 128), deep_supervision=True)
    out, maps = net.forward_with_attention(x)   # maps: gate name -> (B, heads, *skip_spatial) in [0, 1]

    clf = agseg.create_model("ag_sononet", in_channels=1, num_classes=2)
    logits, maps = clf.forward_with_attention(x2d)
    boxes = agseg.localise(maps, shape=x2d.shape[2:])  # weak localisation (seed 003 appendix), one per image
"""

from __future__ import annotations

from typing import Any

from agseg.nets.registry import create_model, get_model_spec, list_models, register_model

__version__ = "0.1.0"

__all__ = ["__version__", "create_model", "get_model_spec", "list_models", "localise", "register_model"]


def __getattr__(name: str) -> Any:
    # agseg.localise (seed 003's weak localisation) is imported on first use, so that `import agseg` stays light and
    # `python -m agseg.inference.localise` runs its module once.
    if name == "localise":
        from agseg.inference.localise import localise

        return localise
    raise AttributeError(f"module 'agseg' has no attribute {name!r}")
