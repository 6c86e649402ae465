"""train.balance: every stratum drawn equally often (agseg.training.sampling), checked against hand counts."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
import torch

from agseg.config import ConfigError, TrainConfig, from_dict
from agseg.data import PreprocessConfig, Preprocessor, SegmentationDataset, load_dataset, write_dataset
from agseg.data.augment import AugmentConfig
from agseg.experiments.run import train_model
from agseg.training.sampling import BalancedSampler, balance_strata, balanced_weights


def test_weights_give_every_stratum_the_same_share():
    w = balanced_weights([("a",), ("a",), ("a",), ("b",)])
    torch.testing.assert_close(w, torch.tensor([1 / 6, 1 / 6, 1 / 6, 1 / 2], dtype=torch.float64))
    assert float(w.sum()) == pytest.approx(1.0)


def test_strata_from_a_case_id_pattern_and_the_classes():
    ids = ["MCUCXR_0001_0", "MCUCXR_0002_1", "CHNCXR_0001_0", "CHNCXR_0002_1"]
    assert balance_strata(ids, [0, 1, 0, 1], r"^([A-Z]+)_") == [("MCUCXR", 0), ("MCUCXR", 1), ("CHNCXR", 0),
                                                                ("CHNCXR", 1)]  # fmt: skip
    assert balance_strata(ids, None, r"^([A-Z]+)_") == [("MCUCXR",), ("MCUCXR",), ("CHNCXR",), ("CHNCXR",)]
    assert balance_strata(ids, [0, 1, 1, 1], "class") == [(0,), (1,), (1,), (1,)]
    with pytest.raises(ValueError, match="'other' does not match"):
        balance_strata([*ids, "other"], None, r"^([A-Z]+)_")
    with pytest.raises(ValueError, match="needs image-level classes"):
        balance_strata(ids, None, "class")
    with pytest.raises(ValueError, match="does not match"):  # an optional group that matched nothing
        balance_strata(["_0001"], None, r"^([A-Z]+)?_")


def _case(draw):
    return draw[0] if isinstance(draw, tuple) else draw


def test_the_sampler_draws_the_strata_evenly_and_the_same_per_epoch():
    strata = [("a",)] * 9 + [("b",)]  # 9 to 1: a plain shuffle draws "b" 10% of the time
    s = BalancedSampler(balanced_weights(strata), seed=3)
    draws = []
    for epoch in range(400):
        s.set_epoch(epoch)
        draws += list(s)
    assert len(draws) == 4000
    share_b = np.mean([_case(d) == 9 for d in draws])
    assert abs(share_b - 0.5) < 0.03  # binomial sd 0.008
    s.set_epoch(7)
    first = list(s)
    s.set_epoch(8)
    other = list(s)
    s.set_epoch(7)
    assert list(s) == first and other != first  # resumable: an epoch draws the same cases again
    counts = Counter(_case(d) for d in first)
    for case, k in counts.items():  # the k draws of one case: case, (case, 1), (case, 2), ...
        assert sorted((d for d in first if _case(d) == case), key=str) == sorted(
            [case] + [(case, j) for j in range(1, k)], key=str
        )


def test_config_refuses_a_pattern_without_a_group_or_that_is_not_a_regex():
    assert TrainConfig(balance="class").balance == "class"
    with pytest.raises(ValueError, match="has no group"):
        TrainConfig(balance="^[A-Z]+_")
    with pytest.raises(ValueError, match="regex with a group"):
        TrainConfig(balance="([A-Z")


@pytest.fixture(scope="module")
def cxr(tmp_path_factory):
    return write_dataset(tmp_path_factory.mktemp("data") / "cxr", "cxr", n=6, size=48, seed=2)


def test_a_repeated_draw_is_the_same_case_augmented_anew(cxr):
    cases = list(load_dataset(cxr, mask_threshold=127))
    pre = Preprocessor(PreprocessConfig(target_size=(32, 32), intensity="minmax01"))
    ds = SegmentationDataset(cases, pre, augment=AugmentConfig(rotate_deg=20, affine_prob=1.0), seed=0)
    a, b = ds[1], ds[(1, 1)]
    assert a["case_id"] == b["case_id"] == cases[1].case_id
    assert not torch.equal(a["image"], b["image"])
    assert torch.equal(ds[(1, 0)]["image"], a["image"])  # a first draw: the seed it always had
    with pytest.raises(IndexError):
        ds[len(cases)]  # no wrap-around: plain iteration still ends


def _cfg(data, balance):
    return from_dict({
        "name": "bal", "data": {"path": str(data), "options": {"mask_threshold": 127},
                                "preprocess": {"target_size": [32, 32], "intensity": "minmax01"}},
        "model": {"name": "unet", "channels": [4, 8]},
        "train": {"epochs": 1, "batch_size": 2, "amp": "off", "balance": balance},
    })  # fmt: skip


def test_train_balances_by_a_pattern_and_refuses_one_that_misses_a_case_before_writing(cxr, tmp_path, monkeypatch):
    """The trainer draws through the sampler: 3 cases of one group and 1 of another get weights 1/6 and 1/2."""
    import agseg.experiments.run as run_mod

    made = []

    class Recording(BalancedSampler):
        def __init__(self, *a, **k):
            super().__init__(*a, **k)
            made.append(self)
            self.drawn = []

        def __iter__(self):
            out = list(super().__iter__())
            self.drawn += out
            return iter(out)

    monkeypatch.setattr(run_mod, "BalancedSampler", Recording)
    cases = list(load_dataset(cxr, mask_threshold=127))
    train = [cases[0], cases[2], cases[4], cases[1]]  # names end in _0, _0, _0, _1
    run = train_model(_cfg(cxr, r"_(\d)$"), tmp_path / "ok", train, [cases[3]])
    assert run.result is not None and (tmp_path / "ok" / "model" / "model.json").is_file()
    (sampler,) = made
    torch.testing.assert_close(sampler.weights, torch.tensor([1 / 6, 1 / 6, 1 / 6, 1 / 2], dtype=torch.float64))
    assert len(sampler.drawn) == 4  # one epoch of draws went to the trainer
    with pytest.raises(ConfigError, match="does not match"):
        train_model(_cfg(cxr, r"^(MCU)"), tmp_path / "bad", train, [cases[3]])
    assert not (tmp_path / "bad").exists()


def test_repeated_draws_reach_dataloader_workers_as_the_same_case(cxr):
    """(case, k) indices cross into worker processes: each batch item is the drawn case, in the drawn order."""
    cases = list(load_dataset(cxr, mask_threshold=127))
    pre = Preprocessor(PreprocessConfig(target_size=(16, 16), intensity="minmax01"))
    ds = SegmentationDataset(cases, pre, augment=AugmentConfig(rotate_deg=20, affine_prob=1.0), seed=0)
    sampler = BalancedSampler(balanced_weights([("a",)] + [("b",)] * (len(cases) - 1)), seed=3)
    drawn = list(sampler)
    assert any(isinstance(d, tuple) for d in drawn)  # case 0 carries half the weight: it is drawn again
    loader = torch.utils.data.DataLoader(ds, batch_size=2, sampler=sampler, num_workers=2)
    got = [cid for batch in loader for cid in batch["case_id"]]
    assert got == [cases[_case(d)].case_id for d in drawn]


def test_a_balanced_classifier_names_the_case_without_a_class(tmp_path):
    """Before the fix the message blamed train.balance ('class' needs image-level classes) for one missing class."""
    from agseg.data.cases import CaseRef
    from agseg.data.errors import DataError
    from agseg.experiments.run import _check_balance

    cfg = from_dict({"name": "c", "data": {"path": str(tmp_path)}, "model": {"name": "sononet8"},
                     "train": {"balance": "class"}})  # fmt: skip
    cases = [CaseRef("a_0", (tmp_path / "a_0.png",), target=0), CaseRef("b", (tmp_path / "b.png",))]
    with pytest.raises(DataError, match="b.png.*has no class"):
        _check_balance(cfg, cases, "classification", 1)
    assert _check_balance(cfg, cases[:1], "classification", 1) == [(0,)]
