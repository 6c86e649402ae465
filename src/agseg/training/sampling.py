"""Balanced sampling of training cases (``train.balance``): every stratum drawn equally often per epoch.

A user's data often mixes sources or classes in unequal numbers (the chest X-rays here: 108 Montgomery images beside
292 from Shenzhen); a plain shuffle then trains mostly on the larger part. ``train.balance: class`` gives each class
the same share of every epoch's draws, a regex (its first group, e.g. ``'^([A-Z]+)_'`` for the hospital prefix of a
case id) gives each (group, class) stratum the same share. Draws are with replacement, as many per epoch as there
are cases, from a generator seeded by ``(seed, epoch)``: an epoch draws the same cases on a resume. A case's
``k``-th draw (k >= 1) in an epoch is yielded as ``(index, k)``, which agseg's datasets read as the same case with
its own augmentation seed, so repeated draws are not identical copies (a first draw is the plain index).

``torch.utils.data.WeightedRandomSampler`` draws the same way but cannot be re-seeded per epoch, so a resumed run
would draw differently; :class:`BalancedSampler` is that sampler plus ``set_epoch``.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence

import torch


def balance_strata(case_ids: Sequence[str], targets: Sequence[int] | None, balance: str) -> list[tuple]:
    """Each case's stratum for ``balance`` (``"class"`` or a regex with a group; see the module doc).

    Args:
        case_ids: the training cases' ids.
        targets: their classes (classifiers), or None (segmentation: no image-level class).
        balance: ``"class"`` or a regular expression searched in each case id, whose first group names the stratum.

    Raises:
        ValueError: ``"class"`` without classes, or a case id the regex does not match (the message names it).
    """
    if balance == "class":
        if targets is None:
            raise ValueError("train.balance: 'class' needs image-level classes (a classifier); use a case-id regex")
        return [(int(t),) for t in targets]
    pattern = re.compile(balance)
    strata = []
    for i, cid in enumerate(case_ids):
        m = pattern.search(cid)
        if m is None or m.group(1) is None:
            raise ValueError(f"train.balance: case {cid!r} does not match {balance!r}: every case must name a group")
        strata.append((m.group(1),) if targets is None else (m.group(1), int(targets[i])))
    return strata


def balanced_weights(strata: Sequence[tuple]) -> torch.Tensor:
    """Sampling weights giving every stratum the same total weight (1 / (strata x its size)); they sum to 1."""
    counts = Counter(strata)
    return torch.tensor([1.0 / (len(counts) * counts[s]) for s in strata], dtype=torch.float64)


class BalancedSampler(torch.utils.data.Sampler):
    """``len(weights)`` draws per epoch with replacement by ``weights``, seeded by ``(seed, epoch)``; a case's k-th
    draw (k >= 1) is yielded as ``(index, k)`` (see the module doc)."""

    def __init__(self, weights: torch.Tensor, seed: int = 0) -> None:
        self.weights = torch.as_tensor(weights, dtype=torch.float64)
        self.seed = int(seed)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.weights)

    def __iter__(self):
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        n = len(self.weights)
        drawn = torch.multinomial(self.weights, n, replacement=True, generator=g).tolist()
        seen: Counter[int] = Counter()
        out = []
        for i in drawn:
            out.append((i, seen[i]) if seen[i] else i)  # the k-th draw of case i: (i, k)
            seen[i] += 1
        return iter(out)
