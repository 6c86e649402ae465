"""Tensor-level inference: whole-image or sliding-window logits, bf16 autocast, probabilities and labels.

Inputs larger than the training patch are covered by overlapping windows blended with Gaussian weights
(MONAI's ``sliding_window_inference``); smaller inputs are padded up to the net's minimum size and cropped back
(:mod:`agseg.nets.forward`).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from agseg.nets.forward import batched, forward_padded, forward_with_attention_padded
from agseg.tasks import logits_to_labels, logits_to_probs

__all__ = ["logits_to_labels", "logits_to_probs", "predict_logits", "predict_with_attention"]


@torch.no_grad()
def predict_logits(
    model: nn.Module,
    image: torch.Tensor,
    patch_size: Sequence[int] | None = None,
    overlap: float = 0.5,
    amp_dtype: torch.dtype | None = None,
    sw_batch_size: int = 2,
) -> torch.Tensor:
    """Logits of ``model`` for ``image`` in eval mode.

    Args:
        model: a segmentation net.
        image: ``(C, *spatial)`` or ``(B, C, *spatial)`` (always batched for nets that do not state
            ``spatial_dims``).
        patch_size: the training patch; when the image is larger along any axis, sliding windows of this size with
            ``overlap`` are used (Gaussian blending). ``None``: the whole image in one pass.
        overlap: window overlap fraction.
        amp_dtype: autocast dtype (``torch.bfloat16`` on CPUs with AMX / AVX-512 bf16), or None.
        sw_batch_size: windows per forward pass.

    Returns:
        float32 logits ``(B, K, *spatial)`` (``B = 1`` for an unbatched image).
    """
    model.eval()
    x = batched(model, image).float()

    def run(t: torch.Tensor) -> torch.Tensor:
        return forward_padded(model, t, amp_dtype)

    if patch_size is None or all(s <= p for s, p in zip(x.shape[2:], patch_size, strict=True)):
        return run(x)
    from monai.inferers import sliding_window_inference

    roi = [min(int(p), s) for p, s in zip(patch_size, x.shape[2:], strict=True)]
    device = next(model.parameters()).device
    return sliding_window_inference(x.to(device), roi, sw_batch_size, run, overlap=overlap, mode="gaussian").float()


@torch.no_grad()
def predict_with_attention(
    model: nn.Module, image: torch.Tensor, amp_dtype: torch.dtype | None = None
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Whole-image logits and attention maps resampled to the image grid: ``{name: (B, heads, *spatial)}``."""
    model.eval()
    return forward_with_attention_padded(model, batched(model, image), amp_dtype)
