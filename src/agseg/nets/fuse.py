"""Batch-norm folding for inference: each ``Conv -> BatchNorm`` pair becomes one convolution.

In eval mode a batch norm is an affine map per channel, ``y = (x - mean) / sqrt(var + eps) * gamma + beta``, so it
can be folded into the weights and bias of the convolution before it (``torch.nn.utils.fusion.fuse_conv_bn_eval``
does the arithmetic). On the CPU this saves one full pass over every feature map per layer: the U-Net family is
memory-bound there, so inference gets measurably faster (``benchmarks/speed.py``) with outputs equal up to float
rounding (``tests/nets/test_fuse.py``).

Only pairs that are adjacent children of an ``nn.Sequential`` are folded (every ``ConvNormAct`` of agseg and the
gates' ``Conv, BN`` pairs); anything else is left as it is, so the folded net computes the same function for every
model, ours or not. Transposed convolutions and norms without running statistics are skipped.
"""

from __future__ import annotations

import copy
import itertools

from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

__all__ = ["fold_batchnorm"]

_CONVS = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)


def _foldable(conv: nn.Module, norm: nn.Module) -> bool:
    return (
        isinstance(conv, _CONVS)
        and type(norm) in _NORMS
        and norm.track_running_stats
        and norm.running_mean is not None
        and norm.running_var is not None
        and conv.out_channels == norm.num_features
    )


def fold_batchnorm(model: nn.Module, inplace: bool = False) -> tuple[nn.Module, int]:
    """An eval-mode copy of ``model`` with every adjacent ``Conv -> BatchNorm`` pair folded into the conv.

    Args:
        model: any module; it is not changed unless ``inplace``.
        inplace: fold in ``model`` itself (saves the copy of a large net).

    Returns:
        ``(folded model in eval mode, number of batch norms folded)``. The folded model's state dict differs from
        the original's (the norms are gone), so save the original, not this one.
    """
    net = model if inplace else copy.deepcopy(model)
    net.eval()
    folded = 0
    for seq in [m for m in net.modules() if isinstance(m, nn.Sequential)]:
        names = list(seq._modules)
        for a, b in itertools.pairwise(names):
            conv, norm = seq._modules[a], seq._modules[b]
            if conv is None or norm is None or not _foldable(conv, norm):
                continue
            seq._modules[a] = fuse_conv_bn_eval(conv, norm)
            seq._modules[b] = nn.Identity()
            folded += 1
    return net, folded
