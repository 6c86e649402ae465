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
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from agseg.experiments.splits import SplitPlan

INIT_RECORD = "init_from.json"


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


def _split_record(weights: Path) -> Path | None:
    """The ``split.json`` of the run a weights file belongs to: beside it, or up to two folders above."""
    here = weights.parent
    for folder in (here, here.parent, here.parent.parent):
        if (folder / "split.json").is_file():
            return folder / "split.json"
    return None


def _advice(src: Path, plan: SplitPlan | None) -> str:
    if plan is None:
        return "start from a model that did not see them"
    return (
        f"run this CV on the source's splits: --splits {src / 'splits.json'} with its seed {plan.seed}, "
        f"--folds {plan.n_folds} and --repeats {plan.n_repeats} (e.g. --set seed={plan.seed})"
    )


def _refuse_leak(what: str, seen: Sequence[str], name: str, src: Path, plan: SplitPlan | None) -> None:
    if seen:
        raise ValueError(
            f"--init-from {what}: that model trained or chose its epoch on {len(seen)} of {name}'s test cases "
            f"(e.g. {seen[0]}), so its weights would leak them: {_advice(src, plan)}"
        )


def cv_init_sources(init_from: str | Path | None, selected: Sequence[Any], out: Path) -> dict[str, Path]:
    """Fold folder name -> the weights file it starts from, for the folds of ``selected`` not yet finished.

    ``init_from`` is another CV folder (each fold starts from the same fold's model there) or one run, model folder,
    ``.safetensors`` or checkpoint (every fold starts from it). Folds already finished in ``out`` (``metrics.csv``
    present) are left out: they train no more.

    Raises:
        FileNotFoundError: the source, or a fold's model in a source CV, is missing.
        ValueError: the source's plan has no such fold, or its model trained or chose its epoch on a test case of
            the fold it would start (read from the source's ``splits.json`` or the run's ``split.json``).
    """
    if init_from is None:
        return {}
    src = Path(init_from)
    todo = [f for f in selected if not (out / fold_name(f.repeat, f.fold) / "metrics.csv").is_file()]
    if is_cv_folder(src):
        theirs = SplitPlan.from_json(src / "splits.json")
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
            _refuse_leak(f"{src} ({name})", sorted((set(g.train) | set(g.val)) & set(f.test)), name, src, theirs)
            model = src / name / "model"
            missing = [p for p in (model / "model.json", model / "model.safetensors") if not p.is_file()]
            if missing:
                raise FileNotFoundError(f"--init-from {src}: {name} has no trained model yet ({missing[0]} is missing)")
            sources[name] = (model / "model.safetensors").resolve()
        return sources
    weights = weights_file(src).resolve()
    record = _split_record(weights)
    if record is not None:
        split = json.loads(record.read_text(encoding="utf-8"))
        seen_by_model = set(split.get("train", [])) | set(split.get("val", []))
        cv = record.parent.parent
        plan = SplitPlan.from_json(cv / "splits.json") if is_cv_folder(cv) else None
        for f in todo:
            name = fold_name(f.repeat, f.fold)
            _refuse_leak(str(src), sorted(seen_by_model & set(f.test)), name, cv, plan)
    return {fold_name(f.repeat, f.fold): weights for f in todo}


def check_init_record(
    out: Path, init_from: str | Path | None, sources: dict[str, Path], plan: SplitPlan, selected: Sequence[Any]
) -> dict[str, Any] | None:
    """The ``init_from.json`` record ``out`` should hold after this call, or None for none; refuses a mixed CV.

    A CV whose folds have started (a fold folder exists) keeps the starting weights it began with: training more of
    its folds (``selected`` ones not finished) without ``--init-from``, with another source, or with one after folds
    started without, is refused; gathering finished folds again is not. The record's
    fold entries are merged, so CVs run a few folds at a time keep every fold's source.

    Raises:
        ValueError: the CV in ``out`` started from other weights than asked now.
    """
    path = out / INIT_RECORD
    old = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None
    new_source = str(Path(init_from).resolve()) if init_from is not None else None
    old_source = old.get("resolved", old.get("source")) if old else None
    started = [f for f in plan.folds if (out / fold_name(f.repeat, f.fold)).is_dir()]
    pending = [f for f in selected if not (out / fold_name(f.repeat, f.fold) / "metrics.csv").is_file()]
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
        return None
    folds = {**(old.get("folds", {}) if old else {}), **{k: str(v) for k, v in sources.items()}}
    return {"source": str(init_from), "resolved": new_source, "folds": folds}
