"""Networks. Importing this package registers every net with :mod:`agseg.nets.registry`."""

from agseg.nets import anunet, attention_unet, focusnetpp, sononet, unet  # noqa: F401  (registration side effects)
from agseg.nets.anunet import ANUNet
from agseg.nets.attention_unet import AttentionUNet
from agseg.nets.base import ClassificationNet, SegmentationNet
from agseg.nets.focusnetpp import FocusNetPP, MultiScaleFusionHead
from agseg.nets.parts import AttentionSkips, DeepSupervisionHead, Encoder, NestedDecoder, UNetDecoder
from agseg.nets.registry import ModelSpec, create_model, get_model_spec, list_models, register_model
from agseg.nets.sononet import AGSononet, Sononet
from agseg.nets.unet import UNet

__all__ = [
    "AGSononet",
    "ANUNet",
    "AttentionSkips",
    "AttentionUNet",
    "ClassificationNet",
    "DeepSupervisionHead",
    "Encoder",
    "FocusNetPP",
    "ModelSpec",
    "MultiScaleFusionHead",
    "NestedDecoder",
    "SegmentationNet",
    "Sononet",
    "UNet",
    "UNetDecoder",
    "create_model",
    "get_model_spec",
    "list_models",
    "register_model",
]
