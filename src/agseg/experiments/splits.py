"""Seeded, patient-grouped (repeated) k-fold splits, saved as ``splits.json`` and reused by every model.

The thesis (seed 000, Tables 4.1-4.8) reports k-fold (k = 5, 10, 20) and repeated k-fold (4-5 repeats) cross
validation, and compares models with Kruskal-Wallis tests (Table 4.9). For those comparisons to compare like with
like, every model must be trained and tested on the same folds: :func:`load_or_create_splits` creates the plan once,
writes it next to the runs, and refuses to reuse a file that does not match the data or the settings.

Splitting rules:

* Cases are grouped (by patient, scan, ...): the cases of one group are never split between train, val and test.
  Without ``groups`` each case is its own group.
* Every case is in exactly one test fold per repeat (scikit-learn ``GroupKFold`` with ``shuffle=True``).
* Classifiers pass ``strata`` (each case's class): the folds are stratified as well as grouped (scikit-learn
  ``StratifiedGroupKFold`` with ``shuffle=True``), so every test fold holds about the dataset's share of each class,
  and the validation groups are drawn class by class in proportion. The strata are saved in ``splits.json``
  (``"stratified": true``, ``"strata"``); a file without them (segmentation, or made before) still reads.
* Each repeat reshuffles the groups with a seed derived from ``(seed, repeat)``; the plan depends only on the set of
  ``(case_id, group)`` pairs and the settings, not on the order in which cases are listed.
* Within each fold a validation subset of groups is carved from the training part: ``ceil(val_fraction * n)`` of
  the ``n`` training groups (at least one group when ``val_fraction > 0``, and never all of them); ``0`` gives an
  empty validation set.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.model_selection import GroupKFold, StratifiedGroupKFold

from agseg.fileio import atomic_write_text

__all__ = [
    "SPLITS_VERSION",
    "Fold",
    "SplitMismatchError",
    "SplitPlan",
    "load_or_create_splits",
    "make_splits",
]

logger = logging.getLogger(__name__)

SPLITS_VERSION = 1


class SplitMismatchError(ValueError):
    """An existing ``splits.json`` does not match the cases or settings it is being reused for."""


@dataclass(frozen=True)
class Fold:
    """One fold of one repeat: case ids for training, validation (model selection) and testing.

    Attributes:
        repeat: Repeat index, ``0 .. n_repeats - 1``.
        fold: Fold index within the repeat, ``0 .. n_folds - 1``.
        train: Case ids to train on.
        val: Case ids held out from training for validation / early stopping (may be empty).
        test: Case ids of the test fold; each case is in exactly one test fold per repeat.
    """

    repeat: int
    fold: int
    train: list[str]
    val: list[str]
    test: list[str]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict with keys ``repeat, fold, train, val, test``."""
        return {
            "repeat": self.repeat,
            "fold": self.fold,
            "train": list(self.train),
            "val": list(self.val),
            "test": list(self.test),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Fold:
        """Inverse of :meth:`to_dict`."""
        return cls(
            repeat=int(d["repeat"]),
            fold=int(d["fold"]),
            train=[str(c) for c in d["train"]],
            val=[str(c) for c in d.get("val", [])],
            test=[str(c) for c in d["test"]],
        )


@dataclass
class SplitPlan:
    """A complete (repeated) k-fold plan.

    Attributes:
        seed: Base seed; repeat ``r`` uses a seed derived from ``(seed, r)``.
        n_folds: Folds per repeat.
        n_repeats: Number of repeats (each a full k-fold over all cases).
        val_fraction: Fraction of training groups moved to validation in each fold.
        case_ids: All case ids, sorted.
        groups: Group of each case (aligned with ``case_ids``); equal to ``case_ids`` when ungrouped.
        folds: ``n_repeats * n_folds`` folds, ordered by ``(repeat, fold)``.
        strata: Class of each case (aligned with ``case_ids``) when the folds are stratified, else None.
    """

    seed: int
    n_folds: int
    n_repeats: int
    val_fraction: float
    case_ids: list[str]
    groups: list[str]
    folds: list[Fold] = field(default_factory=list)
    strata: list[int] | None = None

    @property
    def stratified(self) -> bool:
        """True when the folds were stratified by class (:attr:`strata`)."""
        return self.strata is not None

    def get(self, repeat: int, fold: int) -> Fold:
        """The fold ``fold`` of repeat ``repeat``.

        Raises:
            KeyError: If the plan has no such fold.
        """
        for f in self.folds:
            if f.repeat == repeat and f.fold == fold:
                return f
        raise KeyError(
            f"no fold (repeat={repeat}, fold={fold}) in this plan "
            f"(repeats 0..{self.n_repeats - 1}, folds 0..{self.n_folds - 1})"
        )

    def __iter__(self):
        return iter(self.folds)

    def __len__(self) -> int:
        return len(self.folds)

    @property
    def group_of(self) -> dict[str, str]:
        """Mapping case id -> group."""
        return dict(zip(self.case_ids, self.groups, strict=True))

    def validate(self) -> None:
        """Check the plan's invariants.

        Every repeat has ``n_folds`` folds; in each fold train, val and test are disjoint and cover all cases, no
        group straddles them; every case is in exactly one test fold per repeat.

        Raises:
            ValueError: Naming the first violated invariant.
        """
        all_ids = set(self.case_ids)
        if len(all_ids) != len(self.case_ids):
            raise ValueError("split plan lists duplicate case ids")
        if len(self.groups) != len(self.case_ids):
            raise ValueError("split plan: groups and case_ids differ in length")
        group_of = self.group_of
        keys = sorted((f.repeat, f.fold) for f in self.folds)
        expected = [(r, k) for r in range(self.n_repeats) for k in range(self.n_folds)]
        if keys != expected:
            raise ValueError(f"split plan folds are {keys}, expected every (repeat, fold) in {expected}")
        for r in range(self.n_repeats):
            seen: dict[str, int] = {}
            for f in (f for f in self.folds if f.repeat == r):
                parts = {"train": set(f.train), "val": set(f.val), "test": set(f.test)}
                if sum(len(p) for p in parts.values()) != len(all_ids) or set().union(*parts.values()) != all_ids:
                    raise ValueError(f"repeat {r} fold {f.fold}: train/val/test do not partition the case ids")
                part_groups = {name: {group_of[c] for c in ids} for name, ids in parts.items()}
                for a, b in (("train", "val"), ("train", "test"), ("val", "test")):
                    shared = part_groups[a] & part_groups[b]
                    if shared:
                        raise ValueError(
                            f"repeat {r} fold {f.fold}: group(s) {sorted(shared)[:5]} are in both {a} and {b}"
                        )
                for c in f.test:
                    if c in seen:
                        raise ValueError(f"repeat {r}: case {c!r} is in test folds {seen[c]} and {f.fold}")
                    seen[c] = f.fold
            if set(seen) != all_ids:
                missing = sorted(all_ids - set(seen))
                raise ValueError(f"repeat {r}: cases {missing[:5]} are in no test fold")

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (the ``splits.json`` schema, version 1)."""
        return {
            "version": SPLITS_VERSION,
            "seed": self.seed,
            "n_folds": self.n_folds,
            "n_repeats": self.n_repeats,
            "val_fraction": self.val_fraction,
            "case_ids": list(self.case_ids),
            "groups": list(self.groups),
            **({"stratified": True, "strata": [int(v) for v in self.strata]} if self.strata is not None else {}),
            "folds": [f.to_dict() for f in self.folds],
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> SplitPlan:
        """Inverse of :meth:`to_dict`; validates the plan.

        Raises:
            ValueError: Unknown version, missing keys, or a plan whose invariants do not hold.
        """
        version = d.get("version")
        if version != SPLITS_VERSION:
            raise ValueError(f"unsupported splits version {version!r} (this agseg reads version {SPLITS_VERSION})")
        missing = [k for k in ("seed", "n_folds", "n_repeats", "case_ids", "folds") if k not in d]
        if missing:
            raise ValueError(f"splits file lacks key(s) {missing}")
        case_ids = [str(c) for c in d["case_ids"]]
        groups = d.get("groups")
        strata = d.get("strata")
        if strata is not None and len(strata) != len(case_ids):
            raise ValueError(f"splits file has {len(strata)} strata for {len(case_ids)} case ids")
        plan = cls(
            seed=int(d["seed"]),
            n_folds=int(d["n_folds"]),
            n_repeats=int(d["n_repeats"]),
            val_fraction=float(d.get("val_fraction", 0.0)),
            case_ids=case_ids,
            groups=[str(g) for g in groups] if groups is not None else list(case_ids),
            folds=[Fold.from_dict(f) for f in d["folds"]],
            strata=[int(v) for v in strata] if strata is not None else None,
        )
        plan.validate()
        return plan

    def to_json(self, path: str | os.PathLike[str]) -> Path:
        """Write the plan to ``path`` atomically (temporary file + ``os.replace``). Returns the path."""
        path = Path(path)
        atomic_write_text(path, json.dumps(self.to_dict(), indent=1) + "\n")
        logger.debug("wrote %s (%d folds)", path, len(self.folds))
        return path

    @classmethod
    def from_json(cls, path: str | os.PathLike[str]) -> SplitPlan:
        """Read and validate a ``splits.json``.

        Raises:
            FileNotFoundError: If ``path`` does not exist.
            ValueError: If the file is not a valid version-1 plan (the message names the file).
        """
        path = Path(path)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as e:
            raise ValueError(f"{path}: not valid JSON ({e})") from e
        try:
            return cls.from_dict(data)
        except (ValueError, KeyError, TypeError) as e:
            raise ValueError(f"{path}: {e}") from e


def _derived_seed(*keys: int) -> int:
    """A 32-bit seed derived from integer keys (independent streams for each key tuple)."""
    return int(np.random.SeedSequence([int(k) for k in keys]).generate_state(1)[0])


def _check_inputs(
    case_ids: Sequence[str], groups: Sequence[str] | None, n_folds: int, n_repeats: int, val_fraction: float
) -> tuple[list[str], list[str]]:
    if isinstance(case_ids, str):
        raise TypeError("case_ids must be a sequence of ids, not a single string")
    ids = [str(c) for c in case_ids]
    if len(set(ids)) != len(ids):
        seen: set[str] = set()
        dups = sorted({c for c in ids if c in seen or seen.add(c)})
        raise ValueError(f"duplicate case ids: {dups[:10]}{' ...' if len(dups) > 10 else ''}")
    if groups is None:
        grp = list(ids)
    else:
        grp = [str(g) for g in groups]
        if len(grp) != len(ids):
            raise ValueError(f"groups has {len(grp)} entries but there are {len(ids)} case ids")
    if n_folds < 2:
        raise ValueError(f"n_folds must be at least 2, got {n_folds}")
    if n_repeats < 1:
        raise ValueError(f"n_repeats must be at least 1, got {n_repeats}")
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
    n_groups = len(set(grp))
    if n_folds > n_groups:
        what = "groups (patients)" if groups is not None else "cases"
        raise ValueError(f"n_folds={n_folds} is more than the {n_groups} {what}: each test fold needs at least one")
    return ids, grp


def make_splits(
    case_ids: Sequence[str],
    groups: Sequence[str] | None = None,
    n_folds: int = 5,
    n_repeats: int = 1,
    seed: int = 0,
    val_fraction: float = 0.1,
    strata: Sequence[int] | None = None,
) -> SplitPlan:
    """Seeded, grouped, repeated k-fold split of ``case_ids``.

    Args:
        case_ids: Unique case identifiers.
        groups: Group (patient) of each case, aligned with ``case_ids``; cases of a group stay together.
            ``None``: every case is its own group.
        n_folds: Folds per repeat (the thesis uses 5, 10 and 20).
        n_repeats: Repeats, each reshuffled with a seed derived from ``(seed, repeat)`` (the thesis uses 4-5).
        seed: Base seed; the same inputs and seed give the same plan.
        val_fraction: Fraction of each fold's training groups moved to validation (rounded up, at least one group
            and never all of them when positive; ``0`` gives an empty ``val``).
        strata: Class of each case, aligned with ``case_ids`` (classifiers): stratified folds
            (``StratifiedGroupKFold``) and validation groups drawn in proportion to the classes (a group's class is
            the most common one among its cases). ``None``: grouped folds only (``GroupKFold``), as before.

    Returns:
        The plan, with ``case_ids`` sorted and ``n_repeats * n_folds`` folds ordered by ``(repeat, fold)``; the
        case-id lists inside each fold are sorted too.

    Raises:
        ValueError: ``n_folds < 2``, more folds than groups, duplicate case ids, ``groups`` of the wrong length,
            ``n_repeats < 1`` or ``val_fraction`` outside ``[0, 1)``.
    """
    ids, grp = _check_inputs(case_ids, groups, n_folds, n_repeats, val_fraction)
    strat = _check_strata(strata, len(ids))
    order = sorted(range(len(ids)), key=lambda i: ids[i])
    ids = [ids[i] for i in order]
    grp = [grp[i] for i in order]
    strat = [strat[i] for i in order] if strat is not None else None
    grp_arr = np.asarray(grp, dtype=object)
    x = np.zeros((len(ids), 1))
    group_class = _group_classes(grp, strat) if strat is not None else None
    folds: list[Fold] = []
    for r in range(n_repeats):
        if strat is None:
            splits = GroupKFold(n_splits=n_folds, shuffle=True, random_state=_derived_seed(seed, r)).split(
                x, groups=grp_arr
            )
        else:
            splitter = StratifiedGroupKFold(n_splits=n_folds, shuffle=True, random_state=_derived_seed(seed, r))
            splits = splitter.split(x, np.asarray(strat), groups=grp_arr)
        for k, (train_idx, test_idx) in enumerate(splits):
            train_groups = sorted({grp[i] for i in train_idx})
            n_val = 0
            if val_fraction > 0 and len(train_groups) >= 2:
                n_val = min(len(train_groups) - 1, max(1, math.ceil(val_fraction * len(train_groups))))
            elif val_fraction > 0:
                logger.warning("repeat %d fold %d: one training group only, validation set left empty", r, k)
            rng = np.random.default_rng(_derived_seed(seed, r, k, 1))
            if group_class is None:
                val_groups = {train_groups[i] for i in rng.permutation(len(train_groups))[:n_val]}
            else:
                val_groups = set(_proportional(train_groups, group_class, rng)[:n_val])
            train = sorted(ids[i] for i in train_idx if grp[i] not in val_groups)
            val = sorted(ids[i] for i in train_idx if grp[i] in val_groups)
            test = sorted(ids[i] for i in test_idx)
            folds.append(Fold(repeat=r, fold=k, train=train, val=val, test=test))
    plan = SplitPlan(
        seed=int(seed),
        n_folds=int(n_folds),
        n_repeats=int(n_repeats),
        val_fraction=float(val_fraction),
        case_ids=ids,
        groups=grp,
        folds=folds,
        strata=strat,
    )
    logger.debug("split %d cases (%d groups) into %d x %d folds", len(ids), len(set(grp)), n_repeats, n_folds)
    return plan


def _check_strata(strata: Sequence[int] | None, n: int) -> list[int] | None:
    if strata is None:
        return None
    out = [int(v) for v in strata]
    if len(out) != n:
        raise ValueError(f"strata has {len(out)} entries but there are {n} case ids")
    return out


def _group_classes(groups: Sequence[str], strata: Sequence[int]) -> dict[str, int]:
    """Each group's class: the most common among its cases (the smallest class on a tie)."""
    counts: dict[str, dict[int, int]] = {}
    for g, c in zip(groups, strata, strict=True):
        counts.setdefault(g, {}).setdefault(c, 0)
        counts[g][c] += 1
    return {g: min(cs, key=lambda c: (-cs[c], c)) for g, cs in counts.items()}


def _proportional(groups: Sequence[str], group_class: dict[str, int], rng: np.random.Generator) -> list[str]:
    """``groups`` in an order whose every prefix holds the classes in proportion (systematic stratified sampling):
    each class's groups shuffled, the ``i``-th of ``n`` placed at ``(i + 0.5) / n``, ties broken at random."""
    by_class: dict[int, list[str]] = {}
    for g in groups:
        by_class.setdefault(group_class[g], []).append(g)
    keyed = []
    for c in sorted(by_class):
        members = [by_class[c][i] for i in rng.permutation(len(by_class[c]))]
        keyed += [((i + 0.5) / len(members), float(rng.random()), g) for i, g in enumerate(members)]
    return [g for *_, g in sorted(keyed)]


def _partition(ids: Sequence[str], groups: Sequence[str]) -> set[frozenset[str]]:
    members: dict[str, set[str]] = {}
    for c, g in zip(ids, groups, strict=True):
        members.setdefault(g, set()).add(c)
    return {frozenset(m) for m in members.values()}


def _describe_id_difference(stored: set[str], given: set[str]) -> str:
    parts = []
    only_given = sorted(given - stored)
    only_stored = sorted(stored - given)
    if only_given:
        parts.append(
            f"{len(only_given)} case(s) not in the file: {only_given[:5]}{' ...' if len(only_given) > 5 else ''}"
        )
    if only_stored:
        parts.append(
            f"{len(only_stored)} case(s) in the file but not in the data: "
            f"{only_stored[:5]}{' ...' if len(only_stored) > 5 else ''}"
        )
    return "; ".join(parts)


def load_or_create_splits(
    path: str | os.PathLike[str],
    case_ids: Sequence[str],
    groups: Sequence[str] | None = None,
    *,
    n_folds: int = 5,
    n_repeats: int = 1,
    seed: int = 0,
    val_fraction: float = 0.1,
    strata: Sequence[int] | None = None,
) -> SplitPlan:
    """Reuse the plan in ``path`` if it exists (and matches), else make one and save it there.

    Reusing one ``splits.json`` for every model keeps a comparison paired: each model is tested on the same cases
    in the same folds, trained on the same cases.

    Args:
        path: The ``splits.json`` to read or write.
        case_ids: The cases of the dataset.
        groups: Their groups (see :func:`make_splits`); when given, they must match the file's grouping.
        n_folds: Folds per repeat; must match the file.
        n_repeats: Repeats; must match the file.
        seed: Base seed; must match the file.
        val_fraction: Used when creating; a different value in an existing file is kept (test folds are not
            affected) and logged as a warning, except 0: then each fold's validation cases train instead (no
            validation at all, as the thesis protocol asks), still with the file's test folds.
        strata: Each case's class, for stratified folds (classifiers; see :func:`make_splits`). An existing file
            made without them, or with other classes, is still reused (its folds stay paired) with a warning.

    Returns:
        The loaded or newly created plan.

    Raises:
        SplitMismatchError: The file exists but its case ids (as a set), groups, ``n_folds``, ``n_repeats`` or
            ``seed`` differ; the message names the file and the difference.
        ValueError: Invalid arguments (see :func:`make_splits`) or an unreadable file.
    """
    path = Path(path)
    ids, grp = _check_inputs(case_ids, groups, n_folds, n_repeats, val_fraction)
    if not path.exists():
        plan = make_splits(ids, grp if groups is not None else None, n_folds, n_repeats, seed, val_fraction, strata)
        plan.to_json(path)
        logger.info("created %s: %d repeat(s) x %d folds over %d cases", path, n_repeats, n_folds, len(ids))
        return plan

    plan = SplitPlan.from_json(path)
    problems = []
    for name, want, have in (
        ("n_folds", n_folds, plan.n_folds),
        ("n_repeats", n_repeats, plan.n_repeats),
        ("seed", seed, plan.seed),
    ):
        if want != have:
            problems.append(f"{name} is {have} in the file but {want} was requested")
    if set(ids) != set(plan.case_ids):
        problems.append(_describe_id_difference(set(plan.case_ids), set(ids)))
    elif groups is not None:
        # Compare partitions (which cases share a group), not group names.
        stored_part = _partition(plan.case_ids, plan.groups)
        given_part = _partition(ids, grp)
        if stored_part != given_part:
            differ = sorted(c for c in ids if any(c in s for s in given_part - stored_part))
            problems.append(f"the grouping of cases differs (e.g. cases {differ[:5]})")
    if problems:
        raise SplitMismatchError(
            f"{path} does not match this experiment: {'; '.join(problems)}. Reusing it would make the comparison "
            "unpaired: point to a different splits file, delete it to re-split, or use the settings it was made with."
        )
    if strata is not None:
        want = dict(zip(ids, _check_strata(strata, len(ids)) or [], strict=True))
        if plan.strata is None:
            logger.warning("%s was made without stratification by class: reusing its folds (still paired)", path)
        elif dict(zip(plan.case_ids, plan.strata, strict=True)) != want:
            logger.warning("%s was stratified by other classes than these: reusing its folds (still paired)", path)
    if val_fraction == 0 and any(f.val for f in plan.folds):
        # no validation asked for (the thesis protocol: the k-1 folds train): each fold's validation cases train
        # instead; the test folds, and so the pairing with other models on this file, are unchanged
        logger.warning(
            "%s has validation sets (val_fraction=%g) but val_fraction is 0: they train instead (test folds kept)",
            path,
            plan.val_fraction,
        )
        folds = [dataclasses.replace(f, train=sorted([*f.train, *f.val]), val=[]) for f in plan.folds]
        plan = dataclasses.replace(plan, folds=folds, val_fraction=0.0)
    elif not math.isclose(plan.val_fraction, val_fraction):
        logger.warning(
            "%s was made with val_fraction=%g, not %g: keeping the file's validation sets",
            path,
            plan.val_fraction,
            val_fraction,
        )
    logger.info("reusing %s: %d repeat(s) x %d folds over %d cases", path, plan.n_repeats, plan.n_folds, len(ids))
    return plan
