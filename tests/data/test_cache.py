"""The on-disk cache: keys follow files and settings; a warm cache reads no raw file; writes are atomic."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest

import agseg.data.cases as datasets_mod
from agseg.data import PreprocessCache, PreprocessConfig, Preprocessor, SegmentationDataset, load_dataset


@pytest.fixture
def cxr(synth_root: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(synth_root / "cxr", tmp_path / "cxr"))


def _no_raw_reads(monkeypatch: pytest.MonkeyPatch) -> None:
    def boom(*a, **k):
        raise AssertionError("a raw file was read")

    monkeypatch.setattr(datasets_mod, "read_image", boom)
    monkeypatch.setattr(datasets_mod, "read_mask", boom)


def test_warm_cache_reads_no_raw_files(cxr: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    index = load_dataset(cxr)
    pre = Preprocessor(PreprocessConfig(target_size=(32, 32), intensity="minmax01"))
    ds = SegmentationDataset(index, pre, cache=tmp_path / "cache")
    ds.warm_cache()
    first = [ds[i] for i in range(len(ds))]
    assert ds.cache.misses == 4
    _no_raw_reads(monkeypatch)
    # a later run: new objects, same settings
    ds2 = SegmentationDataset(load_dataset(cxr), Preprocessor(pre.config), cache=tmp_path / "cache")
    for a, i in zip(first, range(len(ds2)), strict=True):
        b = ds2[i]
        assert a["case_id"] == b["case_id"]
        assert np.array_equal(a["image"], b["image"]) and np.array_equal(a["label"], b["label"])
    assert ds2.cache.hits == 4 and ds2.cache.misses == 0
    assert not list((tmp_path / "cache").rglob("*.tmp"))


def test_key_follows_files_and_settings(cxr: Path, tmp_path: Path) -> None:
    cache = PreprocessCache(tmp_path / "c")
    ref = load_dataset(cxr)[0]
    pre = Preprocessor(PreprocessConfig(target_size=(32, 32)))
    k = cache.key(ref, pre)
    assert k == cache.key(ref, Preprocessor(PreprocessConfig(target_size=(32, 32))))
    assert k != cache.key(ref, Preprocessor(PreprocessConfig(target_size=(48, 48))))
    assert k != cache.key(load_dataset(cxr, mask_threshold=200)[0], pre)
    st = ref.mask_paths[0].stat()
    os.utime(ref.mask_paths[0], ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    assert k != cache.key(ref, pre)
    content = PreprocessCache(tmp_path / "c", content_hash=True)
    k2 = content.key(ref, pre)
    os.utime(ref.image_paths[0], ns=(st.st_atime_ns, st.st_mtime_ns + 5 * 10**9))
    assert PreprocessCache(tmp_path / "c", content_hash=True).key(ref, pre) == k2


def test_broken_entry_is_recomputed(cxr: Path, tmp_path: Path) -> None:
    cache = PreprocessCache(tmp_path / "c")
    ref = load_dataset(cxr)[0]
    pre = Preprocessor(PreprocessConfig(target_size=(16, 16)))
    img, _lab, rec = cache.get_or_create(ref, pre)
    image_file = next((tmp_path / "c").rglob("*.image.npy"))
    image_file.unlink()
    img2, _lab2, rec2 = cache.get_or_create(ref, pre)
    assert cache.misses == 2 and np.array_equal(img, img2) and rec2.to_dict() == rec.to_dict()
    mm = PreprocessCache(tmp_path / "c", mmap=True).get_or_create(ref, pre)[0]
    assert isinstance(mm, np.memmap) and np.array_equal(mm, img)
    cache.clear()
    assert cache.load(cache.key(ref, pre)) is None


def test_global_stats_are_cached(cxr: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    index = load_dataset(cxr)
    cache = PreprocessCache(tmp_path / "c")
    pre = Preprocessor(PreprocessConfig(intensity="zscore_global")).fit(index, cache=cache)
    _no_raw_reads(monkeypatch)
    again = Preprocessor(PreprocessConfig(intensity="zscore_global")).fit(index, cache=cache)
    assert again.stats == pre.stats and again.stats["n_cases"] == 4
