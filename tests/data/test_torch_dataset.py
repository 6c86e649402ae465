"""The torch Dataset: the dict the trainer consumes, batching, seeding, bad cases."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
from torch.utils.data import DataLoader

from agseg.data import (
    AugmentConfig,
    DataError,
    PreprocessConfig,
    Preprocessor,
    SegmentationDataset,
    invert,
    load_dataset,
)


def test_item_dict_2d(synth_root: Path, tmp_path: Path) -> None:
    ds = SegmentationDataset(
        load_dataset(synth_root / "cxr"),
        Preprocessor(PreprocessConfig(target_size=(32, 32), intensity="minmax01")),
        cache=tmp_path / "cache",
        augment=AugmentConfig(flip_axes=(1,)),
    )
    item = ds[0]
    assert set(item) == {"image", "label", "case_id"}
    assert item["image"].shape == (1, 32, 32) and item["image"].dtype == torch.float32
    assert item["label"].shape == (32, 32) and item["label"].dtype == torch.int64
    assert item["case_id"] == "SYNCXR_0000_0"
    batch = next(iter(DataLoader(ds, batch_size=4)))
    assert batch["image"].shape == (4, 1, 32, 32) and batch["label"].shape == (4, 32, 32)
    assert batch["case_id"] == ["SYNCXR_0000_0", "SYNCXR_0001_1", "SYNCXR_0002_0", "SYNCXR_0003_1"]


def test_item_dict_3d_patches_and_label_channel(synth_root: Path) -> None:
    ds = SegmentationDataset(
        load_dataset(synth_root / "brats"),
        Preprocessor(PreprocessConfig(intensity="zscore_global")),  # fitted on these cases
        augment=AugmentConfig(patch_size=(8, 16, 16)),
        label_channel=True,
    )
    assert ds.preprocessor.stats is not None and len(ds.preprocessor.stats["mean"]) == 2
    item = ds[1]
    assert item["image"].shape == (2, 8, 16, 16) and item["label"].shape == (1, 8, 16, 16)
    out, geom = invert(ds.load(1)[1], ds.record(1))
    assert out.shape == geom.shape == (12, 20, 24)


def test_seeded_epochs(synth_root: Path) -> None:
    def make() -> SegmentationDataset:
        pre = Preprocessor(PreprocessConfig(target_size=(32, 32)))
        return SegmentationDataset(load_dataset(synth_root / "cxr"), pre, augment=AugmentConfig(affine_prob=1), seed=3)

    a, b = make(), make()
    assert torch.equal(a[0]["image"], b[0]["image"])
    a.set_epoch(1)
    assert not torch.equal(a[0]["image"], b[0]["image"])
    torch.manual_seed(0)
    unseeded = SegmentationDataset(load_dataset(synth_root / "cxr"), augment=AugmentConfig(affine_prob=1))
    assert not torch.equal(unseeded[0]["image"], unseeded[0]["image"])


def test_bad_cases(synth_root: Path, tmp_path: Path) -> None:
    root = Path(shutil.copytree(synth_root / "cxr", tmp_path / "cxr"))
    bad = sorted((root / "cxr").iterdir())[2]
    bad.write_bytes(b"not a png")
    ds = SegmentationDataset(load_dataset(root), cache=tmp_path / "cache")
    with pytest.raises(DataError, match=bad.name):
        ds.warm_cache()
    skipped = ds.warm_cache(skip_bad=True)
    assert [s.case_id for s in skipped] == ["SYNCXR_0002_0"] and len(ds) == 3
    (root / "masks" / "SYNCXR_0000_0.png").unlink()
    ds = SegmentationDataset(load_dataset(root), require_label=True)
    with pytest.raises(DataError, match="no mask"):
        ds[0]
    assert "label" not in SegmentationDataset(load_dataset(root), require_label=False)[0]


def test_worker_errors_keep_their_type(synth_root: Path, tmp_path: Path) -> None:
    root = Path(shutil.copytree(synth_root / "cxr", tmp_path / "cxr"))
    (sorted((root / "cxr").iterdir())[0]).write_bytes(b"junk")
    loader = DataLoader(SegmentationDataset(load_dataset(root)), batch_size=2, num_workers=1)
    with pytest.raises(DataError, match="SYNCXR_0000_0.png"):
        next(iter(loader))
