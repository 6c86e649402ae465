"""Tensor-level inference: whole-image or sliding-window logits, bf16 autocast, probabilities and labels.

Inputs larger than the training patch are covered by overlapping windows blended with Gaussian weights
(MONAI's ``sliding_window_inference``); smaller inputs are padded up to the net's minimum size and cropped back.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["logits_to_labels", "logits_to_probs", "predict_logits", "predict_with_attention"]


def _main(out: torch.Tensor | Sequence[torch.Tensor]) -> torch.Tensor:
    return out if isinstance(out, torch.Tensor) else out[0]


def _pad_to(x: torch.Tensor, minimum: int) -> tuple[torch.Tensor, tuple[int, ...]]:
    size = tuple(x.shape[2:])
    target = [max(s, minimum) for s in size]
    pad: list[int] = []
    for s, t in zip(reversed(size), reversed(target), strict=True):
        pad += [0, t - s]
    return (F.pad(x, pad, mode="replicate") if any(pad) else x), size


def _crop(x: torch.Tensor, size: tuple[int, ...]) -> torch.Tensor:
    return x[(slice(None), slice(None), *(slice(0, s) for s in size))]


def _batched(model: nn.Module, image: torch.Tensor) -> torch.Tensor:
    """Add a batch axis to an unbatched ``(C, *spatial)`` image (nets without ``spatial_dims`` get batches)."""
    spatial_dims = getattr(model, "spatial_dims", None)
    return image[None] if spatial_dims is not None and image.ndim == spatial_dims + 1 else image


def _autocast(device: torch.device, dtype: torch.dtype | None):
    return torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None)


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
        image: ``(C, *spatial)`` or ``(B, C, *spatial)`` (always batched for nets without ``spatial_dims``).
        patch_size: the training patch; when the image is larger along any axis, sliding windows of this size with
            ``overlap`` are used (Gaussian blending). ``None``: the whole image in one pass.
        overlap: window overlap fraction.
        amp_dtype: autocast dtype (``torch.bfloat16`` on CPUs with AMX / AVX-512 bf16), or None.
        sw_batch_size: windows per forward pass.

    Returns:
        float32 logits ``(B, K, *spatial)`` (``B = 1`` for an unbatched image).
    """
    model.eval()
    device = next(model.parameters()).device
    x = _batched(model, image).to(device).float()
    minimum = int(getattr(model, "min_input_size", 1))

    def run(t: torch.Tensor) -> torch.Tensor:
        t, size = _pad_to(t, minimum)
        with _autocast(device, amp_dtype):
            out = _main(model(t))
        return _crop(out.float(), size)

    if patch_size is None or all(s <= p for s, p in zip(x.shape[2:], patch_size, strict=True)):
        return run(x)
    from monai.inferers import sliding_window_inference

    roi = [min(int(p), s) for p, s in zip(patch_size, x.shape[2:], strict=True)]
    return sliding_window_inference(x, roi, sw_batch_size, run, overlap=overlap, mode="gaussian").float()


@torch.no_grad()
def predict_with_attention(
    model: nn.Module, image: torch.Tensor, amp_dtype: torch.dtype | None = None
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Whole-image logits and attention maps resampled to the image grid: ``{name: (B, heads, *spatial)}``."""
    model.eval()
    device = next(model.parameters()).device
    x, size = _pad_to(_batched(model, image).to(device).float(), int(getattr(model, "min_input_size", 1)))
    with _autocast(device, amp_dtype):
        out, maps = model.forward_with_attention(x)
    from agseg.layers import resize_to

    maps = {k: _crop(resize_to(v.float(), x.shape[2:]), size) for k, v in maps.items()}
    return _crop(_main(out).float(), size), maps


def logits_to_probs(logits: torch.Tensor) -> torch.Tensor:
    """Sigmoid for one output channel, softmax over channels otherwise. ``(B, K, *S) -> (B, K, *S)``."""
    return torch.sigmoid(logits) if logits.shape[1] == 1 else torch.softmax(logits, dim=1)


def logits_to_labels(logits: torch.Tensor) -> torch.Tensor:
    """Label map ``(B, *S)``: logit > 0 for one channel (probability > 0.5), argmax otherwise."""
    return (logits[:, 0] > 0).long() if logits.shape[1] == 1 else logits.argmax(1)
