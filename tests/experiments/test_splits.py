"""Splits: grouping, coverage, repeats, seeding, JSON round trip, reuse checks, validation fraction, errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from agseg.experiments.splits import (
    SplitMismatchError,
    SplitPlan,
    load_or_create_splits,
    make_splits,
)

IDS = [f"case{i:03d}" for i in range(30)]
GROUPS = [f"patient{i // 3}" for i in range(30)]  # 10 patients, 3 cases each
COMMITTED = sorted((Path(__file__).resolve().parents[2] / "docs" / "results").glob("*/splits.json"))


def test_every_case_in_exactly_one_test_fold_per_repeat():
    plan = make_splits(IDS, GROUPS, n_folds=5, n_repeats=3, seed=7)
    assert len(plan.folds) == 15
    for r in range(3):
        tests = [c for k in range(5) for c in plan.get(r, k).test]
        assert sorted(tests) == sorted(IDS)
        for k in range(5):
            f = plan.get(r, k)
            assert sorted(f.train + f.val + f.test) == sorted(IDS)
            assert not set(f.train) & set(f.test) and not set(f.val) & set(f.test) and not set(f.train) & set(f.val)


def test_groups_never_straddle_train_val_test():
    plan = make_splits(IDS, GROUPS, n_folds=5, n_repeats=2, seed=1, val_fraction=0.2)
    g = plan.group_of
    for f in plan:
        parts = [{g[c] for c in f.train}, {g[c] for c in f.val}, {g[c] for c in f.test}]
        assert not parts[0] & parts[1] and not parts[0] & parts[2] and not parts[1] & parts[2]
    plan.validate()


def test_seeded_reproducible_order_invariant_and_repeats_differ():
    a = make_splits(IDS, GROUPS, n_folds=5, n_repeats=2, seed=3)
    b = make_splits(IDS[::-1], GROUPS[::-1], n_folds=5, n_repeats=2, seed=3)
    assert a.to_dict() == b.to_dict()
    rep0 = [set(a.get(0, k).test) for k in range(5)]
    rep1 = [set(a.get(1, k).test) for k in range(5)]
    assert sorted(map(sorted, rep0)) != sorted(map(sorted, rep1))
    c = make_splits(IDS, GROUPS, n_folds=5, n_repeats=2, seed=4)
    assert c.to_dict()["folds"] != a.to_dict()["folds"]


@pytest.mark.parametrize("path", COMMITTED, ids=[p.parent.name for p in COMMITTED])
def test_committed_splits_regenerate_identically(path):
    """The splits behind docs/results come back from their seed and ids (scikit-learn's GroupKFold shuffle included),
    so a rerun of those experiments tests the same cases in the same folds."""
    stored = json.loads(path.read_text(encoding="utf-8"))
    plan = make_splits(
        stored["case_ids"], stored["groups"], stored["n_folds"], stored["n_repeats"], stored["seed"],
        stored["val_fraction"], strata=stored.get("strata"),  # classification splits are stratified by class
    )  # fmt: skip
    assert plan.to_dict() == stored


def test_val_fraction():
    plan = make_splits(IDS, GROUPS, n_folds=5, seed=0, val_fraction=0.25)
    for f in plan:  # 8 training patients -> ceil(0.25 * 8) = 2 patients = 6 cases
        assert len(f.val) == 6
    tiny = make_splits(IDS, GROUPS, n_folds=5, seed=0, val_fraction=0.01)
    assert all(len(f.val) == 3 for f in tiny)  # at least one group
    none = make_splits(IDS, GROUPS, n_folds=5, seed=0, val_fraction=0)
    assert all(f.val == [] for f in none)


def test_ungrouped_uses_each_case_as_group():
    plan = make_splits(IDS[:10], n_folds=10, seed=0, val_fraction=0)
    assert plan.groups == plan.case_ids == sorted(IDS[:10])
    assert all(len(f.test) == 1 for f in plan)  # leave-one-out: each case alone in one test fold
    assert sorted(f.test[0] for f in plan) == sorted(IDS[:10])


def test_json_round_trip_and_schema(tmp_path):
    plan = make_splits(IDS, GROUPS, n_folds=5, n_repeats=2, seed=5)
    path = plan.to_json(tmp_path / "sub" / "splits.json")
    data = json.loads(path.read_text(encoding="utf-8"))
    assert data["version"] == 1
    assert {"seed", "n_folds", "n_repeats", "val_fraction", "case_ids", "groups", "folds"} <= set(data)
    assert set(data["folds"][0]) == {"repeat", "fold", "train", "val", "test"}
    again = SplitPlan.from_json(path)
    assert again == plan
    assert not list(path.parent.glob("*.tmp"))  # atomic write leaves no temporary file


def test_from_json_rejects_broken_plan(tmp_path):
    data = make_splits(IDS, GROUPS, n_folds=5).to_dict()
    data["folds"][0]["test"].append(data["folds"][1]["test"][0])
    (tmp_path / "bad.json").write_text(json.dumps(data), encoding="utf-8")
    with pytest.raises(ValueError, match=r"bad\.json"):
        SplitPlan.from_json(tmp_path / "bad.json")
    data["version"] = 2
    (tmp_path / "v2.json").write_text(json.dumps(data), encoding="utf-8")
    with pytest.raises(ValueError, match="version"):
        SplitPlan.from_json(tmp_path / "v2.json")


def test_load_or_create_reuses_and_detects_mismatch(tmp_path):
    path = tmp_path / "splits.json"
    first = load_or_create_splits(path, IDS, GROUPS, n_folds=5, n_repeats=2, seed=1)
    assert path.is_file()
    mtime = path.stat().st_mtime_ns
    again = load_or_create_splits(path, list(reversed(IDS)), list(reversed(GROUPS)), n_folds=5, n_repeats=2, seed=1)
    assert again == first and path.stat().st_mtime_ns == mtime
    with pytest.raises(SplitMismatchError, match=r"splits\.json.*n_folds is 5 in the file but 10"):
        load_or_create_splits(path, IDS, GROUPS, n_folds=10, n_repeats=2, seed=1)
    with pytest.raises(SplitMismatchError, match="seed"):
        load_or_create_splits(path, IDS, GROUPS, n_folds=5, n_repeats=2, seed=2)
    with pytest.raises(SplitMismatchError, match="case000"):
        load_or_create_splits(path, IDS[1:], GROUPS[1:], n_folds=5, n_repeats=2, seed=1)
    with pytest.raises(SplitMismatchError, match="grouping"):
        load_or_create_splits(path, IDS, IDS, n_folds=5, n_repeats=2, seed=1)
    # Renamed groups with the same partition are fine.
    load_or_create_splits(path, IDS, [g.upper() for g in GROUPS], n_folds=5, n_repeats=2, seed=1)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"n_folds": 1}, "at least 2"),
        ({"n_folds": 11}, "more than the 10 groups"),
        ({"case_ids": ["a", "b", "a", "c"], "groups": None}, "duplicate case ids"),
        ({"groups": GROUPS[:-1]}, "groups has 29 entries"),
        ({"val_fraction": 1.0}, "val_fraction"),
        ({"n_repeats": 0}, "n_repeats"),
    ],
)
def test_errors(kwargs, match):
    args = {"case_ids": IDS, "groups": GROUPS, "n_folds": 5} | kwargs
    with pytest.raises(ValueError, match=match):
        make_splits(**args)


def test_reusing_a_file_with_validation_sets_and_val_fraction_0_trains_on_them(tmp_path):
    """The thesis protocol (no validation: the k-1 folds train) on a splits file made with a carve-out: the
    validation cases join training, the test folds (and so the pairing) stay the file's."""
    path = tmp_path / "splits.json"
    made = load_or_create_splits(path, IDS, GROUPS, n_folds=5, seed=0, val_fraction=0.25)
    assert all(f.val for f in made)
    reused = load_or_create_splits(path, IDS, GROUPS, n_folds=5, seed=0, val_fraction=0)
    reused.validate()
    for a, b in zip(made, reused, strict=True):
        assert b.val == [] and b.test == a.test and sorted(b.train) == sorted(a.train + a.val)
    kept = load_or_create_splits(path, IDS, GROUPS, n_folds=5, seed=0, val_fraction=0.1)  # other fractions: kept
    assert [f.val for f in kept] == [f.val for f in made]
