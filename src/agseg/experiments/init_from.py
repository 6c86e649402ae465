"""Where a run or a cross-validation starts its weights from (``--init-from``), checked before anything trains.

Pure checks over folders on disk; :func:`agseg.experiments.run.train_model` and
:func:`agseg.experiments.run.run_cv` call them before they write into their output folder, so that a refused source
leaves nothing behind and a retry needs no ``--overwrite``.

- :func:`weights_file` resolves a source as ``train_model`` loads it: a run folder's ``model/model.safetensors``, a
  bundle folder's ``model.safetensors``, or the file itself (a ``.safetensors`` or a checkpoint).
- :func:`is_cv_folder` tells a CV folder (``splits.json`` and ``repeat*_fold*`` subfolders, no model of its own).
- :func:`cv_init_sources` maps each fold to the weights it starts from, refusing sources whose models trained or
  chose their epoch on the fold's test cases, as far as the source's ``split.json`` / ``splits.json`` tell.
- :func:`check_init_record` keeps one CV on one source: a CV resumed from other starting weights would mix them.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from agseg.experiments.splits import SplitPlan

INIT_RECORD = "init_from.json"
log = logging.getLogger(__name__)


def fold_name(repeat: int, fold: int) -> str:
    """The folder name of one fold of a CV."""
    return f"repeat{repeat}_fold{fold}"


def weights_file(source: str | Path) -> Path:
    """The weights file ``train_model`` loads for ``--init-from source``.

    Raises:
        FileNotFoundError: ``source`` does not exist, or is a folder without the weights file.
    """
    src = Path(source)
    if not src.exists():
        raise FileNotFoundError(f"--init-from {src}: no such file or folder")
    if src.is_file():
        if src.suffix == ".json" or src.name.endswith((".yaml", ".csv", ".log")):
            raise ValueError(f"--init-from {src}: holds no weights (name the run or model folder, or its .safetensors)")
        return src
    weights = src / "model" / "model.safetensors" if (src / "model").is_dir() else src / "model.safetensors"
    if not weights.is_file():
        raise FileNotFoundError(
            f"--init-from {src}: no weights there ({weights} is missing): name a run folder (its model/), a model "
            "folder, a .safetensors or a checkpoint"
        )
    return weights


def is_cv_folder(path: Path) -> bool:
    """True for a CV folder: ``splits.json`` and fold subfolders, and no model of its own at the top."""
    return (
        path.is_dir()
        and (path / "splits.json").is_file()
        and not (path / "model").is_dir()
        and not (path / "model.json").is_file()
        and any(p.is_dir() for p in path.glob("repeat*_fold*"))
    )


def refuse_inside(out: Path, sources: Sequence[Path], given: str | Path | None) -> None:
    """Refuse ``--init-from`` weights that lie inside ``out`` when ``--overwrite`` is about to delete ``out``.

    Raises:
        ValueError: a source under ``out`` (the message names it).
    """
    root = out.resolve()
    for src in [*([Path(given)] if given is not None else []), *sources]:
        resolved = src.resolve()
        if resolved.is_relative_to(root):
            where = "is --out itself" if resolved == root else f"lies inside --out {out}"
            raise ValueError(
                f"--init-from {given if given is not None else src}: {src} {where}, which --overwrite deletes "
                "before training: copy that model out of it first, or write to another --out"
            )


def _split_record(weights: Path) -> Path | None:
    """The ``split.json`` of the run a weights file belongs to: beside it, or up to two folders above."""
    here = weights.parent
    for folder in (here, here.parent, here.parent.parent):
        if (folder / "split.json").is_file():
            return folder / "split.json"
    return None


def _read_record(path: Path) -> dict[str, Any]:
    """A run's ``split.json`` or ``init_from.json``; ValueError naming the file when it is not a JSON object."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise ValueError(f"--init-from: {path} cannot be read ({err})") from None
    if not isinstance(data, dict):
        raise ValueError(f"--init-from: {path} is not an agseg record (a JSON object)")
    return data


def check_resumed_source(run_dir: Path, source: Path) -> None:
    """A resumed run keeps the weights it started from: its ``init_from.json`` (and the cases recorded there as seen)
    must not be replaced by another source's.

    Raises:
        ValueError: ``run_dir`` started from other weights than ``source``, or its record cannot be read.
    """
    record = run_dir / INIT_RECORD
    if not record.is_file():
        return
    before = _read_record(record).get("source")
    if before and Path(before).resolve() != source.resolve():
        raise ValueError(
            f"{run_dir} started from {before}, not {source}: resume it with --init-from {before}, or start it again "
            "with --overwrite"
        )


def _lineage(weights: Path) -> list[tuple[Path, set[str]]]:
    """``weights`` and the weights it was itself started from (each run's ``init_from.json``), each with the cases
    its run trained or chose its epoch on (its ``split.json``; empty where none is found), nearest first."""
    chain: list[tuple[Path, set[str]]] = []
    seen: set[Path] = set()
    current: Path | None = weights
    while current is not None and current not in seen and len(chain) < 32:
        seen.add(current)
        record = _split_record(current)
        cases: set[str] = set()
        nxt = None
        if record is not None:
            split = _read_record(record)
            cases = set(split.get("train", [])) | set(split.get("val", []))
            init = record.parent / INIT_RECORD
            if init.is_file():
                rec = _read_record(init)
                source = rec.get("source")
                if isinstance(rec.get("seen"), list) and source:  # the chain as it was when that run started
                    chain.append((current, cases))
                    chain.append((Path(source), set(rec["seen"])))
                    return chain
                if source and Path(source).is_file():
                    nxt = Path(source).resolve()
                elif source:
                    log.warning("--init-from: %s was started from %s, which is gone: the cases that model saw "
                                "cannot be checked", current, source)  # fmt: skip
        chain.append((current, cases))
        current = nxt
    return chain


def seen_cases(weights: Path) -> list[str]:
    """Every case ``weights`` and the models it was started from trained or chose their epoch on (:func:`_lineage`):
    recorded in a run's ``init_from.json`` when it starts, so that its own later sources can be checked even after
    those models' folders were changed or deleted."""
    return sorted(set().union(*(cases for _, cases in _lineage(weights))))


def _advice(src: Path, plan: SplitPlan | None, one_fold: bool = False) -> str:
    if plan is None:
        return "start from a model that did not see them"
    if one_fold:
        return f"start each fold from the same fold's model instead: --init-from {src} (the CV folder)"
    return (
        f"run this CV on the source's splits: --splits {src / 'splits.json'} with its seed {plan.seed}, "
        f"--folds {plan.n_folds} and --repeats {plan.n_repeats} (e.g. --set seed={plan.seed})"
    )


class _Groups:
    """Case id -> patient group, from this CV's plan and the source's: a leak is a shared patient, not only a
    shared case id (two images of one patient under different names)."""

    def __init__(self, *plans: SplitPlan | None) -> None:
        self.of: dict[str, str] = {}
        for plan in plans:
            if plan is not None:
                for cid, g in zip(plan.case_ids, plan.groups, strict=True):
                    self.of.setdefault(cid, g)

    def leaked(self, seen: set[str], test: Sequence[str]) -> list[str]:
        """The test cases that ``seen`` holds, or whose patient it holds."""
        seen_groups = {self.of[c] for c in seen if c in self.of}
        return sorted(c for c in test if c in seen or self.of.get(c, c) in seen_groups)


def _refuse_leak(what: str, leaked: Sequence[str], name: str, advice: str, via: Path | None = None) -> None:
    if leaked:
        how = f" (through {via}, which it was started from)" if via is not None else ""
        raise ValueError(
            f"--init-from {what}: that model{how} trained or chose its epoch on {len(leaked)} of {name}'s test "
            f"cases or their patients (e.g. {leaked[0]}), so its weights would leak them: {advice}"
        )


def _check_lineage(what: str, weights: Path, fold: Any, groups: _Groups, advice: str, extra: set[str]) -> None:
    name = fold_name(fold.repeat, fold.fold)
    for i, (w, cases) in enumerate(_lineage(weights)):
        _refuse_leak(what, groups.leaked(cases | (extra if i == 0 else set()), fold.test), name, advice,
                     via=w if i else None)  # fmt: skip


def pending_folds(selected: Sequence[Any], out: Path, fresh: bool = False) -> list[Any]:
    """The folds of ``selected`` that still train: not finished in ``out`` (``metrics.csv``); all when ``fresh``."""
    return [f for f in selected if fresh or not (out / fold_name(f.repeat, f.fold) / "metrics.csv").is_file()]


def cv_init_sources(
    init_from: str | Path | None, selected: Sequence[Any], out: Path, plan: SplitPlan | None = None, fresh: bool = False
) -> dict[str, Path]:
    """Fold folder name -> the weights file it starts from, for the folds of ``selected`` that still train.

    ``init_from`` is another CV folder (each fold starts from the same fold's model there) or one run, model folder,
    ``.safetensors`` or checkpoint (every fold starts from it). Folds already finished in ``out`` (``metrics.csv``
    present) are left out unless ``fresh`` (``--overwrite``: ``out`` is about to be emptied). Each source is checked
    against the fold's test cases and, through ``plan`` (this CV's) and the source's plan, their patients; so are the
    models it was itself started from (their runs' ``init_from.json``), as far as their ``split.json`` tell.

    Raises:
        FileNotFoundError: the source, or a fold's model in a source CV, is missing.
        ValueError: the source's plan has no such fold, a file that holds no weights, or a model that trained or
            chose its epoch on a test case (or patient) of the fold it would start.
    """
    if init_from is None:
        return {}
    src = Path(init_from)
    todo = pending_folds(selected, out, fresh)
    if is_cv_folder(src):
        theirs = SplitPlan.from_json(src / "splits.json")
        groups = _Groups(plan, theirs)
        sources = {}
        for f in todo:
            name = fold_name(f.repeat, f.fold)
            try:
                g = theirs.get(f.repeat, f.fold)
            except KeyError:
                raise ValueError(
                    f"--init-from {src}: no {name} there (a {theirs.n_repeats}x{theirs.n_folds} plan): "
                    f"{_advice(src, theirs)}"
                ) from None
            model = src / name / "model"
            missing = [p for p in (model / "model.json", model / "model.safetensors") if not p.is_file()]
            if missing:
                raise FileNotFoundError(f"--init-from {src}: {name} has no trained model yet ({missing[0]} is missing)")
            weights = (model / "model.safetensors").resolve()
            _check_lineage(f"{src} ({name})", weights, f, groups, _advice(src, theirs), set(g.train) | set(g.val))
            sources[name] = weights
        return sources
    weights = weights_file(src).resolve()
    record = _split_record(weights)
    cv = record.parent.parent if record is not None else None
    theirs = SplitPlan.from_json(cv / "splits.json") if cv is not None and is_cv_folder(cv) else None
    groups = _Groups(plan, theirs)
    advice = _advice(cv, theirs, one_fold=True) if cv is not None and theirs is not None else _advice(src, None)
    for f in todo:
        _check_lineage(str(src), weights, f, groups, advice, set())
    return {fold_name(f.repeat, f.fold): weights for f in todo}


def check_init_record(
    out: Path,
    init_from: str | Path | None,
    sources: dict[str, Path],
    plan: SplitPlan,
    selected: Sequence[Any],
    fresh: bool = False,
) -> dict[str, Any] | None:
    """The ``init_from.json`` record ``out`` should hold after this call (None: none, and an old one goes); refuses a
    mixed CV.

    A CV whose folds have started (a fold folder exists) keeps the starting weights it began with: training more of
    its folds (``selected`` ones not finished) without ``--init-from``, with another source, or with one after folds
    started without, is refused; gathering finished folds again is not. The record's fold entries are merged, so CVs
    run a few folds at a time keep every fold's source. ``fresh``: ``out`` is about to be emptied (``--overwrite``).

    Raises:
        ValueError: the CV in ``out`` started from other weights than asked now.
    """
    path = out / INIT_RECORD
    old = json.loads(path.read_text(encoding="utf-8")) if path.is_file() and not fresh else None
    new_source = str(Path(init_from).resolve()) if init_from is not None else None
    old_source = None
    if old:  # records written before "resolved" existed hold the source as typed, relative to where agseg ran
        old_source = old.get("resolved") or str(Path(old["source"]).resolve())
    started = [] if fresh else [f for f in plan.folds if (out / fold_name(f.repeat, f.fold)).is_dir()]
    pending = pending_folds(selected, out, fresh)
    if started and pending and old_source != new_source:
        if old_source is None:
            why = f"its folds started from scratch, not from {new_source}: rerun it without --init-from"
        elif new_source is None:
            why = f"its folds started from {old_source} ({path}): pass --init-from {old_source} to resume it"
        else:
            why = f"its folds started from {old_source} ({path}), not {new_source}: pass --init-from {old_source}"
        raise ValueError(f"{out}: {why}, or --overwrite to start the CV again")
    if not pending:
        return old
    if new_source is None:
        return None  # nothing started from the old record's source (else refused above): it goes
    folds = {**(old.get("folds", {}) if old else {}), **{k: str(v) for k, v in sources.items()}}
    return {"source": str(init_from), "resolved": new_source, "folds": folds}
