"""The real datasets in ../shared/data (skipped with a reason when absent). Kept fast: counts, headers, a few cases."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from agseg.data import load_dataset, read_header, read_mask

pytestmark = pytest.mark.realdata


def test_cxr_lungs_400_binary(shared_data: Path) -> None:
    index = load_dataset(shared_data / "cxr_lungs")
    assert index.layout == "folders" and len(index) == 400 and len(index.labelled()) == 400
    assert sum(c.case_id.startswith("MCUCXR") for c in index) == 108
    assert all(c.patient_id == c.image_paths[0].name[:-4] for c in index)
    index.check(headers_only=True)  # every mask matches its image in size and geometry
    for ref in index[::97]:
        case = ref.load()
        assert case.image.shape == (1, 512, 512) and case.geometry.spacing == (1.0, 1.0)
        assert set(np.unique(case.label)) == {0, 1}
        raw = read_mask(ref.mask_paths[0])[0]
        np.testing.assert_array_equal(case.label, raw > 127)


def test_msd_hippocampus_200_labels_012(shared_data: Path) -> None:
    index = load_dataset(shared_data / "msd_hippocampus")
    assert len(index) == 200 and len(index.labelled()) == 200
    for ref in index:
        assert read_header(ref.mask_paths[0]).spacing == (1.0, 1.0, 1.0)
    seen: set[int] = set()
    for ref in index[::40]:
        case = ref.load()
        assert case.geometry.spacing == (1.0, 1.0, 1.0) and case.label.shape == case.image.shape[1:]
        seen |= set(np.unique(case.label).tolist())
    assert seen == {0, 1, 2}


def test_dsb2018_250_merged(shared_data: Path) -> None:
    index = load_dataset(shared_data / "dsb2018_nuclei")
    assert index.layout == "dsb2018" and len(index) == 250 and all(len(c.mask_paths) >= 1 for c in index)
    for ref in index[::125]:
        case = ref.load()
        assert case.image.shape[0] == 3
        union = np.any([read_mask(p)[0] > 0 for p in ref.mask_paths], axis=0)
        np.testing.assert_array_equal(case.label, union)


def test_brats_sample_4_cases_2_channels(shared_data: Path) -> None:
    index = load_dataset(shared_data / "brats_sample")
    assert index.layout == "case_folders" and len(index) == 4
    assert all(len(c.image_paths) == 2 for c in index)
    assert sorted(c.meta["split"] for c in index) == ["train", "train", "validation", "validation"]
    for ref in index:
        g = ref.check_headers()
        assert g.shape == (155, 240, 240) and g.spacing == (1.0, 1.0, 1.0)
    case = index[0].load()
    assert case.image.shape == (2, 155, 240, 240) and set(np.unique(case.label)) <= {0, 1, 2, 3, 4}
