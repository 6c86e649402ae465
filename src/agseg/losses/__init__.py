"""agseg.losses: segmentation losses of the papers, functional core and ``nn.Module`` wrappers.

Convention for every loss (stated in each docstring):

* ``input``: **logits** ``(B, C, *spatial)``, 2D or 3D. ``C == 1``: sigmoid (binary); ``C > 1``: softmax over
  channels. ``activation="sigmoid" | "softmax" | "none"`` overrides (``"none"``: probabilities given).
* ``target``: integer labels ``(B, *spatial)`` or ``(B, 1, *spatial)``, or one-hot ``(B, C, *spatial)``.
* computed in float32 (safe under bf16 autocast); ``exclude_classes`` drops channels before the softmax
  (seed 001); ``include_background=False`` drops channel 0 from the overlap terms.

Create by name::

    from agseg.losses import create_loss, list_losses, DeepSupervisionLoss
    crit = DeepSupervisionLoss(create_loss("dice_ce"), weights=[1.0, 0.5, 0.25])

Registered names: ``dice``, ``soft_dice_vnet``, ``dice_ce``, ``ce``, ``bce``, ``focal``, ``tversky``,
``balanced_ce``, ``anunet_hybrid``, ``focusnet_hl``, ``focusnet_hybrid`` (alias ``adaptive_log``).
"""

from __future__ import annotations

from agseg.losses.cross_entropy import (
    BalancedCrossEntropyLoss,
    BinaryCrossEntropyLoss,
    CrossEntropyLoss,
    balanced_cross_entropy_loss,
    binary_cross_entropy_loss,
    cross_entropy_loss,
)
from agseg.losses.deep_supervision import DeepSupervisionLoss, deep_supervision_loss
from agseg.losses.dice import DiceCELoss, DiceLoss, dice_ce_loss, dice_loss, soft_dice_per_class
from agseg.losses.focal import FocalLoss, focal_loss
from agseg.losses.hybrid import (
    AdaptiveLogLoss,
    ANUNetHybridLoss,
    FocusNetHLLoss,
    FocusNetHybridLoss,
    adaptive_log_loss,
    anunet_hybrid_loss,
    focusnet_hl,
    focusnet_hybrid_loss,
)
from agseg.losses.registry import (
    LossSpec,
    UnknownLossError,
    create_loss,
    get_loss_spec,
    list_losses,
    register_loss,
)
from agseg.losses.tversky import TverskyLoss, tversky_index, tversky_loss

__all__ = [
    "ANUNetHybridLoss",
    "AdaptiveLogLoss",
    "BalancedCrossEntropyLoss",
    "BinaryCrossEntropyLoss",
    "CrossEntropyLoss",
    "DeepSupervisionLoss",
    "DiceCELoss",
    "DiceLoss",
    "FocalLoss",
    "FocusNetHLLoss",
    "FocusNetHybridLoss",
    "LossSpec",
    "TverskyLoss",
    "UnknownLossError",
    "adaptive_log_loss",
    "anunet_hybrid_loss",
    "balanced_cross_entropy_loss",
    "binary_cross_entropy_loss",
    "create_loss",
    "cross_entropy_loss",
    "deep_supervision_loss",
    "dice_ce_loss",
    "dice_loss",
    "focal_loss",
    "focusnet_hl",
    "focusnet_hybrid_loss",
    "get_loss_spec",
    "list_losses",
    "register_loss",
    "soft_dice_per_class",
    "tversky_index",
    "tversky_loss",
]

_V_NET = "Milletari et al. 2016 (V-Net); seed 000 appendix A"
register_loss("dice", DiceLoss, description="soft Dice loss, plain-sum denominator (MONAI DiceLoss form)")
register_loss(
    "soft_dice_vnet",
    DiceLoss,
    defaults={"squared": True},
    description="soft Dice loss with squared denominator (V-Net)",
    paper=_V_NET,
)
register_loss("dice_ce", DiceCELoss, description="soft Dice + cross-entropy (MONAI DiceCELoss form)")
register_loss("ce", CrossEntropyLoss, description="cross-entropy (softmax; BCE for one channel)")
register_loss("bce", BinaryCrossEntropyLoss, description="binary cross-entropy with logits (sigmoid per channel)")
register_loss("focal", FocalLoss, description="focal loss (alpha, gamma)", paper="Lin et al. 2017; seed 002 eq. 2")
register_loss(
    "tversky",
    TverskyLoss,
    description="Tversky loss (alpha 0.3 on FP, beta 0.7 on FN)",
    paper="Salehi et al. 2017; seed 004 eq. 1",
)
register_loss(
    "balanced_ce", BalancedCrossEntropyLoss, description="balanced cross-entropy (Omega 0.7)", paper="seed 004 eq. 1"
)
register_loss(
    "anunet_hybrid",
    ANUNetHybridLoss,
    description="ANU-Net hybrid focal-like + squared Dice loss, summed over deep-supervision outputs",
    paper="Li et al. 2020 (ANU-Net); seed 002 eq. 3",
)
register_loss(
    "focusnet_hl",
    FocusNetHLLoss,
    description="FocusNet++ HL = k Cb + (1-k) TL, without the adaptive log loss",
    paper="seed 004 eq. 1",
)
register_loss(
    "focusnet_hybrid",
    FocusNetHybridLoss,
    description="FocusNet++ ALL-HL: adaptive logarithmic loss of HL (gamma 0.1, omega 10, epsilon 0.5)",
    paper="Kaul et al. 2021 (FocusNet++); seed 004 eq. 1-2",
)
register_loss(
    "adaptive_log",
    FocusNetHybridLoss,
    description="alias of focusnet_hybrid (adaptive logarithmic loss of FocusNet++'s HL)",
    paper="Kaul et al. 2019; seed 004 eq. 2",
)
