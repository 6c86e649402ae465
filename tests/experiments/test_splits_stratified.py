"""Stratified, patient-grouped folds for classifiers (StratifiedGroupKFold), saved in a compatible splits.json."""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest

from agseg.experiments.splits import SplitPlan, load_or_create_splits, make_splits


def _data(n=100, positive=0.2, group_size=1):
    ids = [f"c{i:03d}" for i in range(n)]
    groups = [f"p{i // group_size:03d}" for i in range(n)]
    strata = [int((i // group_size) % round(1 / positive) == 0) for i in range(n)]
    return ids, groups, strata


def test_every_test_fold_holds_the_datasets_share_of_each_class():
    ids, groups, strata = _data()
    plan = make_splits(ids, groups, n_folds=5, n_repeats=2, seed=3, val_fraction=0.2, strata=strata)
    plan.validate()
    cls = dict(zip(ids, strata, strict=True))
    for f in plan.folds:
        assert sum(cls[c] for c in f.test) == 4 and len(f.test) == 20  # 20 % positives in every fold
        # validation drawn in proportion too: 16 of the 80 training cases, 3-4 of them positive
        assert len(f.val) == 16 and sum(cls[c] for c in f.val) in (3, 4)
    assert plan.stratified and plan.strata == [cls[c] for c in plan.case_ids]


def test_groups_stay_together_when_stratified():
    ids, groups, strata = _data(n=120, group_size=3)
    plan = make_splits(ids, groups, n_folds=4, seed=0, val_fraction=0.1, strata=strata)
    plan.validate()  # no group in two parts of a fold
    cls = dict(zip(ids, strata, strict=True))
    positives = [sum(cls[c] for c in f.test) for f in plan.folds]
    assert max(positives) - min(positives) <= 3  # one group of 3 at most between folds


def test_stratification_balances_what_grouped_folds_leave_to_chance():
    ids, groups, strata = _data(n=60, positive=0.1)
    cls = dict(zip(ids, strata, strict=True))
    plain = [sum(cls[c] for c in f.test) for f in make_splits(ids, groups, n_folds=6, seed=0, val_fraction=0).folds]
    strat = make_splits(ids, groups, n_folds=6, seed=0, val_fraction=0, strata=strata).folds
    assert [sum(cls[c] for c in f.test) for f in strat] == [1] * 6
    assert sorted(plain) != [1] * 6  # precondition: without strata some folds get 0 or 2 positives


def test_splits_json_round_trip_and_older_files(tmp_path, caplog):
    ids, groups, strata = _data(n=40)
    plan = make_splits(ids, groups, n_folds=4, seed=1, strata=strata)
    path = plan.to_json(tmp_path / "splits.json")
    data = json.loads(path.read_text(encoding="utf-8"))
    assert data["version"] == 1 and data["stratified"] is True and len(data["strata"]) == 40
    back = SplitPlan.from_json(path)
    assert back.strata == plan.strata and back.folds == plan.folds
    # a segmentation plan (no strata) has no strata keys and still reads
    seg = make_splits(ids, groups, n_folds=4, seed=1).to_json(tmp_path / "seg.json")
    assert "strata" not in json.loads(seg.read_text(encoding="utf-8")) and SplitPlan.from_json(seg).strata is None
    # reusing an unstratified file for a classifier keeps its folds, with a warning
    with caplog.at_level(logging.WARNING):
        again = load_or_create_splits(seg, ids, groups, n_folds=4, seed=1, strata=strata)
    assert again.strata is None and "without stratification" in caplog.text
    created = load_or_create_splits(tmp_path / "new.json", ids, groups, n_folds=4, seed=1, strata=strata)
    assert created.folds == plan.folds
    bad = dict(data, strata=[0, 1])
    (tmp_path / "bad.json").write_text(json.dumps(bad), encoding="utf-8")
    with pytest.raises(ValueError, match="2 strata for 40 case ids"):
        SplitPlan.from_json(tmp_path / "bad.json")


def test_strata_of_the_wrong_length_are_refused():
    with pytest.raises(ValueError, match="strata has 2 entries"):
        make_splits(["a", "b", "c"], n_folds=2, strata=[0, 1])


def test_unstratified_plans_are_unchanged():
    ids, groups, _ = _data(n=30)
    from sklearn.model_selection import GroupKFold

    from agseg.experiments.splits import _derived_seed

    plan = make_splits(ids, groups, n_folds=3, seed=5, val_fraction=0)
    gkf = GroupKFold(n_splits=3, shuffle=True, random_state=_derived_seed(5, 0))
    want = [sorted(np.asarray(sorted(ids))[t].tolist()) for _, t in gkf.split(np.zeros((30, 1)), groups=sorted(groups))]
    assert [f.test for f in plan.folds] == want
