"""Layouts, descriptors, case lists, and bad input: every problem names its file, or is skipped with a word."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import numpy as np
import pytest

from agseg.data import (
    DataError,
    Geometry,
    MaskSpec,
    detect_layout,
    inspect_dataset,
    load_dataset,
    read_mask,
    write_image,
    write_mask,
)


@pytest.mark.parametrize(
    ("kind", "layout", "n", "channels", "labels"),
    [
        ("cxr", "folders", 4, 1, {0, 1}),
        ("montgomery", "folders", 3, 1, {0, 1}),
        ("volumes", "folders", 3, 1, {0, 1, 2}),
        ("msd", "msd", 3, 1, {0, 1, 2}),
        ("luna16", "luna16", 2, 1, {0, 1}),
        ("dsb", "dsb2018", 3, 3, {0, 1}),
        ("brats", "case_folders", 4, 2, {0, 1, 2, 3, 4}),
    ],
)
def test_layouts_are_recognised(synth_root: Path, kind, layout, n, channels, labels) -> None:
    index = load_dataset(synth_root / kind)
    assert index.layout == layout == detect_layout(synth_root / kind)
    assert len(index) == n and len(set(index.case_ids)) == n
    case = index[0].load()
    assert case.image.shape[0] == channels and case.image.dtype == np.float32
    assert case.label is not None and set(np.unique(case.label)) <= labels
    assert case.label.shape == case.image.shape[1:] == case.geometry.shape


def test_montgomery_left_right_masks_are_merged(synth_root: Path) -> None:
    ref = load_dataset(synth_root / "montgomery")[0]
    assert [p.parent.name for p in ref.mask_paths] == ["leftMask", "rightMask"]
    left, right = (read_mask(p)[0] > 127 for p in ref.mask_paths)
    np.testing.assert_array_equal(ref.load().label, (left | right).astype(np.uint8))
    index = load_dataset(synth_root / "montgomery", merge="index")
    assert set(np.unique(index[0].load().label)) == {0, 1, 2}


def test_dsb_instances_merged_and_rgb(synth_root: Path) -> None:
    ref = load_dataset(synth_root / "dsb")[0]
    union = np.any([read_mask(p)[0] > 0 for p in ref.mask_paths], axis=0)
    case = ref.load()
    assert case.image.shape[0] == 3
    np.testing.assert_array_equal(case.label, union.astype(np.uint8))


def test_luna16_label_map_and_ids(synth_root: Path) -> None:
    index = load_dataset(synth_root / "luna16")
    ref = index[0]
    assert ref.case_id.startswith("1.3.6.1.4.1") and ref.patient_id == ref.case_id
    raw = read_mask(ref.mask_paths[0])[0]
    assert set(np.unique(raw)) == {0, 3, 4, 5}
    np.testing.assert_array_equal(ref.load().label, np.isin(raw, [3, 4]).astype(np.uint8))
    assert ref.load().geometry.spacing == pytest.approx((0.7, 0.7, 2.5))
    keep_all = load_dataset(synth_root / "luna16", label_map={3: 1, 4: 2, 5: 3}, labels=None)
    assert set(np.unique(keep_all[0].load().label)) == {0, 1, 2, 3}


def test_brats_channels_split_and_patient(synth_root: Path) -> None:
    index = load_dataset(synth_root / "brats")
    ref = index[0]
    assert [p.name for p in ref.image_paths] == ["Flair_subtrMeanDivStd.nii.gz", "T1c_subtrMeanDivStd.nii.gz"]
    assert ref.mask_paths[0].name == "OTMultiClass.nii.gz"
    assert ref.patient_id == "brats_syn_pat0000" and ref.meta["split"] == "train"
    assert any("brainmask" in w for w in index.warnings)
    only = load_dataset(synth_root / "brats", channels=["T1c*"], mask="OTMultiClass")
    assert only[0].load().image.shape[0] == 1


def test_yaml_descriptor(synth_root: Path, tmp_path: Path) -> None:
    desc = tmp_path / "mont.yaml"
    desc.write_text(
        f"layout: folders\nroot: {synth_root / 'montgomery'}\nimages: CXR_png\n"
        "masks: [ManualMask/leftMask, ManualMask/rightMask]\nmask_threshold: 127\nlabels: [0, 1]\n",
        encoding="utf-8",
    )
    index = load_dataset(desc)
    assert index.layout == "folders" and len(index) == 3 and index.options["mask_threshold"] == 127
    with pytest.raises(ValueError, match="unknown option"):
        load_dataset(desc, bogus=1)


def test_csv_and_json_lists(synth_root: Path, tmp_path: Path) -> None:
    index = load_dataset(synth_root / "cxr")
    csv_path = index.save_list(tmp_path / "cases.csv")
    again = load_dataset(csv_path)
    assert again.layout == "list" and again.case_ids == index.case_ids
    rows = [
        {"image": str(r.image_paths[0]), "mask": str(r.mask_paths[0]), "patient_id": "P1" if i < 2 else "P2"}
        for i, r in enumerate(index)
    ]
    (tmp_path / "cases.json").write_text(json.dumps(rows), encoding="utf-8")
    lst = load_dataset(tmp_path / "cases.json", mask_threshold="auto")
    assert [r.patient_id for r in lst] == ["P1", "P1", "P2", "P2"]
    assert set(np.unique(lst[0].load().label)) == {0, 1}
    (tmp_path / "rel.csv").write_text("image,mask\nnope.png,nope_mask.png\n", encoding="utf-8")
    with pytest.raises(DataError, match="nope.png.*not found"):
        load_dataset(tmp_path / "rel.csv")


def test_nnunet_channel_files_grouped(tmp_path: Path) -> None:
    g = Geometry.identity((4, 5, 6))
    for case in ("a", "b"):
        for ch in range(2):
            write_image(tmp_path / "imagesTr" / f"{case}_{ch:04d}.nii.gz", np.full((4, 5, 6), ch, np.float32), g)
        write_mask(tmp_path / "labelsTr" / f"{case}.nii.gz", np.ones((4, 5, 6), np.uint8), g)
    index = load_dataset(tmp_path)
    assert index.case_ids == ["a", "b"] and index[0].load().image[:, 0, 0, 0].tolist() == [0, 1]
    (tmp_path / "dataset.json").write_text(
        json.dumps(
            {"channel_names": {"0": "T2", "1": "ADC"}, "labels": {"background": 0, "x": 1}, "file_ending": ".nii.gz"}
        ),
        encoding="utf-8",
    )
    msd = load_dataset(tmp_path)
    assert msd.layout == "msd" and msd.case_ids == ["a", "b"] and msd[0].mask_spec.labels == (0, 1)


def _copy(synth_root: Path, kind: str, tmp_path: Path) -> Path:
    return Path(shutil.copytree(synth_root / kind, tmp_path / kind))


def test_duplicate_case_ids(synth_root: Path, tmp_path: Path, caplog) -> None:
    root = _copy(synth_root, "cxr", tmp_path)
    first = sorted((root / "cxr").iterdir())[0]
    shutil.copy(first, first.with_suffix(".bmp"))
    with pytest.raises(DataError, match=r"SYNCXR_0000_0\.png: duplicate case id .*SYNCXR_0000_0\.bmp"):
        load_dataset(root)
    with caplog.at_level(logging.WARNING):
        index = load_dataset(root, skip_bad=True)
    assert len(index) == 4 and len(index.skipped) == 1 and "duplicate" in caplog.text


def test_mask_size_mismatch(synth_root: Path, tmp_path: Path) -> None:
    root = _copy(synth_root, "cxr", tmp_path)
    mask = sorted((root / "masks").iterdir())[1]
    write_image(mask, np.zeros((60, 64), np.uint8), Geometry.identity((60, 64), format="png"))
    index = load_dataset(root)
    with pytest.raises(DataError, match=rf"{mask.name}: mask does not match image .*size \(60, 64\)"):
        index[1].load()
    with pytest.raises(DataError, match="size"):
        index[1].check_headers()
    index.check(skip_bad=True)
    assert len(index) == 3 and index.skipped[0].path == str(mask)


def test_geometry_mismatch_3d(synth_root: Path, tmp_path: Path) -> None:
    root = _copy(synth_root, "volumes", tmp_path)
    lab = sorted((root / "labels").iterdir())[0]
    m, g = read_mask(lab)
    write_mask(lab, m, g.replace(spacing=(0.8, 0.9, 3.0)))
    with pytest.raises(DataError, match=r"case_000.nii.gz: mask does not match image .*spacing"):
        load_dataset(root)[0].load()


def test_nan_voxels(synth_root: Path, tmp_path: Path) -> None:
    root = _copy(synth_root, "volumes", tmp_path)
    img = sorted((root / "images").iterdir())[2]
    from agseg.data import read_image

    a, g = read_image(img)
    a[0, 1, 2, 3] = np.nan
    a[0, 2, 2, 3] = np.inf
    write_image(img, a, g)
    with pytest.raises(DataError, match=r"case_002.nii.gz: image has 2 NaN/Inf voxels"):
        load_dataset(root)[2].load()


def test_labels_outside_allowed(synth_root: Path, tmp_path: Path) -> None:
    root = _copy(synth_root, "msd", tmp_path)
    lab = sorted((root / "labelsTr").iterdir())[0]
    m, g = read_mask(lab)
    m[0, 0, 0] = 7
    write_mask(lab, m, g)
    with pytest.raises(DataError, match=r"labelsTr/case_000.nii.gz: mask values \[7\] outside the allowed labels"):
        load_dataset(root)[0].load()
    root2 = _copy(synth_root, "luna16", tmp_path)
    lab = sorted((root2 / "seg-lungs-LUNA16").glob("*.mhd"))[0]
    m, g = read_mask(lab)
    m[0, 0, 0] = 9
    write_mask(lab, m, g)
    with pytest.raises(DataError, match=r"\.mhd: mask values \[9\] are not in the label map"):
        load_dataset(root2).check()


def test_non_integer_mask(tmp_path: Path) -> None:
    g = Geometry.identity((3, 4, 5))
    write_image(tmp_path / "images" / "a.nii.gz", np.zeros((3, 4, 5), np.float32), g)
    write_image(tmp_path / "labels" / "a.nii.gz", np.full((3, 4, 5), 0.5, np.float32), g)
    with pytest.raises(DataError, match="labels/a.nii.gz: mask has non-integer values"):
        load_dataset(tmp_path)[0].load()


def test_empty_and_unknown(tmp_path: Path) -> None:
    (tmp_path / "images").mkdir()
    (tmp_path / "masks").mkdir()
    with pytest.raises(DataError, match="empty dataset"):
        load_dataset(tmp_path)
    with pytest.raises(DataError, match="could not recognise"):
        load_dataset(tmp_path / "masks")
    with pytest.raises(DataError, match="not found"):
        load_dataset(tmp_path / "nope")


def test_missing_one_of_several_masks(synth_root: Path, tmp_path: Path) -> None:
    root = _copy(synth_root, "montgomery", tmp_path)
    victim = sorted((root / "ManualMask" / "rightMask").iterdir())[0]
    victim.unlink()
    with pytest.raises(DataError, match=r"no mask in .*rightMask"):
        load_dataset(root)
    assert len(load_dataset(root, skip_bad=True)) == 2


def test_unlabelled_images_and_orphan_masks_are_reported(synth_root: Path, tmp_path: Path) -> None:
    root = _copy(synth_root, "cxr", tmp_path)
    masks = sorted((root / "masks").iterdir())
    masks[0].unlink()
    masks[1].rename(root / "masks" / "orphan.png")
    index = load_dataset(root)
    assert len(index) == 4 and len(index.labelled()) == 2
    assert any("no mask" in w for w in index.warnings) and any("orphan.png" in w for w in index.warnings)


def test_mask_spec() -> None:
    p = Path("m.png")
    aa = np.array([0, 100, 128, 255], np.uint8)
    np.testing.assert_array_equal(MaskSpec(threshold="auto").apply([(aa, p)]), [0, 0, 1, 1])
    np.testing.assert_array_equal(MaskSpec(threshold="auto").apply([(np.array([0, 1, 2], np.uint8), p)]), [0, 1, 2])
    with pytest.raises(DataError, match="negative"):
        MaskSpec().apply([(np.array([-1, 0], np.int16), p)])
    assert MaskSpec.from_dict(MaskSpec(label_map={"3": 1}).to_dict()).label_map == {3: 1}


def test_inspect_collects_problems(synth_root: Path, tmp_path: Path) -> None:
    root = _copy(synth_root, "cxr", tmp_path)
    bad = sorted((root / "cxr").iterdir())[0]
    bad.write_bytes(bad.read_bytes()[:100])
    r = inspect_dataset(root)
    assert r["n_cases"] == 3 and r["n_bad"] == 1 and r["label_values"] == [0, 1]
    assert r["problems"][0]["path"] == str(bad) and "cannot read" in r["problems"][0]["problem"]
    assert r["shapes"]["min"] == [64, 64] and r["spacings"]["min"] == [1.0, 1.0]
    json.dumps(r)


def test_dicom_series_cases(tmp_path: Path) -> None:
    from agseg.data import write_dataset

    root = write_dataset(tmp_path / "dcm", "dicom", n=2, size=(6, 10, 12), spacing=(0.8, 0.9, 2.0))
    index = load_dataset(root)
    assert index.layout == "folders" and index.case_ids == ["case_000", "case_001"]
    case = index[0].load()
    assert index[0].image_paths[0].is_dir() and case.geometry.format == "dicom"
    assert case.geometry.spacing == pytest.approx((0.8, 0.9, 2.0), rel=1e-5) and case.label.shape == (6, 10, 12)


def test_nan_in_metaimage(tmp_path: Path) -> None:
    g = Geometry.identity((3, 4, 5), format="mha")
    a = np.zeros((3, 4, 5), np.float32)
    a[1, 1, 1] = np.nan
    write_image(tmp_path / "images" / "a.mha", a, g)
    write_mask(tmp_path / "labels" / "a.mha", np.zeros((3, 4, 5), np.uint8), g)
    with pytest.raises(DataError, match=r"images/a.mha: image has 1 NaN/Inf voxels"):
        load_dataset(tmp_path)[0].load()


def test_isic_segmentation_masks_pair_with_their_images(tmp_path):
    # ISIC 2018: ISIC_0000000.jpg + ISIC_0000000_segmentation.png (the folder layout did not pair them before)
    import numpy as np
    from PIL import Image

    from agseg.data import load_dataset

    (tmp_path / "images").mkdir()
    (tmp_path / "masks").mkdir()
    for i in range(2):
        Image.fromarray(np.full((8, 8, 3), 100 + i, np.uint8)).save(tmp_path / "images" / f"ISIC_000000{i}.jpg")
        m = np.zeros((8, 8), np.uint8)
        m[2:5, 2:5] = 255
        Image.fromarray(m).save(tmp_path / "masks" / f"ISIC_000000{i}_segmentation.png")
    cases = list(load_dataset(tmp_path))
    assert [c.case_id for c in cases] == ["ISIC_0000000", "ISIC_0000001"]
    assert all(c.has_mask and c.mask_paths[0].name.endswith("_segmentation.png") for c in cases)
