"""Declared label sets (``DatasetIndex.labels``) and image-level classes (``CaseRef.target``).

Layouts declare what they know: an MSD / nnU-Net ``dataset.json`` (both forms), a descriptor's or the caller's
``labels`` (list, ``{value: name}`` or ``{name: value}``), luna16 and dsb2018 by definition. The mask check keeps
working from the declared values, and a case list's ``class`` column becomes ``CaseRef.target``.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from agseg.data import CaseRef, DataError, inspect_dataset, list_layouts, load_dataset, parse_labels, save_case_list
from agseg.data.layouts import ScanResult, get_layout, register_layout, registry

HIPPOCAMPUS = {0: "background", 1: "Anterior", 2: "Posterior"}


# ------------------------------------------------------------------------------------------------------ parse_labels
@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (None, None),
        ([0, 1, 2], {0: "background", 1: "1", 2: "2"}),
        ((2, 0, 1, 1), {0: "background", 1: "1", 2: "2"}),
        ({0: "background", 1: "lung"}, {0: "background", 1: "lung"}),
        ({"1": "Anterior", "0": "background", "2": "Posterior"}, HIPPOCAMPUS),  # MSD form, unsorted
        ({"background": 0, "lung": 1}, {0: "background", 1: "lung"}),  # nnU-Net v2 form
        ({"background": 0, "tumour": [1, 2]}, {0: "background", 1: "tumour", 2: "tumour"}),  # a v2 region
        ({"background": "0", "x": 1.0}, {0: "background", 1: "x"}),
        (np.array([1, 0]), {0: "background", 1: "1"}),
        ({np.int64(1): "lung", np.uint8(0): "background"}, {0: "background", 1: "lung"}),
    ],
)
def test_parse_labels_forms(value, expected) -> None:
    got = parse_labels(value)
    assert got == expected
    if got is not None:
        assert list(got) == sorted(got)  # sorted by value


def test_overlapping_regions_take_the_most_specific_name() -> None:
    # nnU-Net v2 BraTS regions: each value is named by the smallest entry listing it
    brats = {"background": 0, "whole_tumor": [1, 2, 3], "tumor_core": [2, 3], "enhancing_tumor": [3]}
    assert parse_labels(brats) == {0: "background", 1: "whole_tumor", 2: "tumor_core", 3: "enhancing_tumor"}
    # a plain value beats a region; ties go to the first listed
    assert parse_labels({"a": [1, 2], "b": 2, "c": [1, 3], "d": [3, 4]}) == {1: "a", 2: "b", 3: "c", 4: "d"}


@pytest.mark.parametrize(
    ("value", "match"),
    [
        ({0: "background", "lung": 1}, "mixes values and names"),
        ([0, -1], "negative"),
        ({"background": 0, "x": 1.5}, "not an integer"),
        ([0, True], "not an integer"),
        ("0,1", "list of values or a mapping"),
        ({"x": []}, "lists no value"),
        ({0: ["a"]}, "name must be a string"),
    ],
)
def test_parse_labels_rejects_bad_input(value, match) -> None:
    with pytest.raises(ValueError, match=match):
        parse_labels(value)


# ----------------------------------------------------------------------------------------------------- MSD dataset.json
def _write_nifti(path: Path, array: np.ndarray, spacing=(1.0, 1.0, 1.0)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    img = sitk.GetImageFromArray(array)
    img.SetSpacing(spacing)
    sitk.WriteImage(img, str(path))


def _msd(root: Path, labels: dict, n: int = 3, training: bool = True) -> Path:
    """A tiny MSD / nnU-Net dataset: ``n`` NIfTI cases written with SimpleITK, masks with values 0, 1, 2."""
    rng = np.random.default_rng(0)
    items = []
    for i in range(n):
        name = f"case_{i:03d}"
        mask = np.zeros((6, 8, 10), np.uint8)
        mask[1:4, 2:5, 2:6] = 1
        mask[2:3, 3:4, 6:8] = 2
        img_name = f"{name}.nii.gz" if training else f"{name}_0000.nii.gz"
        _write_nifti(root / "imagesTr" / img_name, rng.normal(size=mask.shape).astype(np.float32))
        _write_nifti(root / "labelsTr" / f"{name}.nii.gz", mask)
        items.append({"image": f"./imagesTr/{name}.nii.gz", "label": f"./labelsTr/{name}.nii.gz"})
    dj: dict = {"name": "tiny", "labels": labels}
    if training:
        dj |= {"modality": {"0": "MRI"}, "numTraining": n, "training": items}
    else:
        dj |= {"channel_names": {"0": "MRI"}, "file_ending": ".nii.gz", "numTraining": n}
    (root / "dataset.json").write_text(json.dumps(dj), encoding="utf-8")
    return root


def test_msd_form_declares_named_labels(tmp_path: Path) -> None:
    root = _msd(tmp_path / "msd", {"0": "background", "1": "Anterior", "2": "Posterior"})
    index = load_dataset(root)
    assert index.layout == "msd" and len(index) == 3
    assert index.labels == HIPPOCAMPUS and list(index.labels) == [0, 1, 2]
    assert index[0].mask_spec.labels == (0, 1, 2)
    assert set(np.unique(index[0].load().label)) == {0, 1, 2}
    assert load_dataset(root / "dataset.json").labels == HIPPOCAMPUS  # the file itself as the source


def test_nnunet_v2_form_and_regions(tmp_path: Path) -> None:
    v2 = load_dataset(_msd(tmp_path / "v2", {"background": 0, "hippocampus": 1, "tail": 2}, training=False))
    assert v2.labels == {0: "background", 1: "hippocampus", 2: "tail"} and v2.case_ids == [
        f"case_{i:03d}" for i in range(3)
    ]
    region = load_dataset(_msd(tmp_path / "region", {"background": 0, "tumour": [1, 2]}, training=False))
    assert region.labels == {0: "background", 1: "tumour", 2: "tumour"}
    region.check()  # values 0, 1, 2 are all allowed


def test_msd_mask_outside_declared_labels_names_the_file(tmp_path: Path) -> None:
    root = _msd(tmp_path / "msd", {"background": 0, "hippocampus": 1}, training=False)  # masks also hold 2
    index = load_dataset(root)
    assert index.labels == {0: "background", 1: "hippocampus"}
    with pytest.raises(DataError, match=r"labelsTr/case_000\.nii\.gz: mask values \[2\] outside the allowed labels"):
        index[0].load()
    # the labels option overrides dataset.json (names included); None turns the check off and declares nothing
    assert load_dataset(root, labels={0: "bg", 1: "a", 2: "b"}).labels == {0: "bg", 1: "a", 2: "b"}
    off = load_dataset(root, labels=None)
    assert off.labels is None and off[0].mask_spec.labels is None
    off.check()


def test_bad_labels_in_dataset_json_name_it(tmp_path: Path) -> None:
    root = _msd(tmp_path / "msd", {"background": 0, "tumour": "one"})
    with pytest.raises(DataError, match=r"dataset\.json: bad 'labels' entry: label value 'one' is not an integer"):
        load_dataset(root)
    assert load_dataset(root, labels=[0, 1, 2]).labels == {0: "background", 1: "1", 2: "2"}  # the option wins


def test_synthetic_msd_fixture_declares_its_labels(synth_root: Path) -> None:
    assert load_dataset(synth_root / "msd").labels == {0: "background", 1: "structure_a", 2: "structure_b"}


# ------------------------------------------------------------------------------------- descriptors, options, layouts
@pytest.mark.parametrize(
    ("yaml_labels", "expected"),
    [
        ("{0: background, 1: lung}", {0: "background", 1: "lung"}),
        ("{background: 0, lung: 1}", {0: "background", 1: "lung"}),
        ("[0, 1, 2]", {0: "background", 1: "1", 2: "2"}),
    ],
)
def test_descriptor_labels(synth_root: Path, tmp_path: Path, yaml_labels: str, expected: dict) -> None:
    desc = tmp_path / "cxr.yaml"
    desc.write_text(f"layout: folders\nroot: {synth_root / 'cxr'}\nlabels: {yaml_labels}\n", encoding="utf-8")
    index = load_dataset(desc)
    assert index.labels == expected
    assert all(c.mask_spec.labels == tuple(expected) for c in index)
    index.check()  # cxr masks hold 0 and 1


def test_mask_outside_declared_descriptor_labels_names_the_file(synth_root: Path, tmp_path: Path) -> None:
    desc = tmp_path / "cxr.yaml"
    desc.write_text(f"root: {synth_root / 'cxr'}\nlabels: {{background: 0}}\n", encoding="utf-8")
    index = load_dataset(desc)
    assert index.layout == "folders" and index.labels == {0: "background"}
    mask = index[0].mask_paths[0]
    with pytest.raises(DataError, match=rf"{mask.name}: mask values \[1\] outside the allowed labels \[0\]"):
        index[0].load()


def test_bad_labels_option(synth_root: Path, tmp_path: Path) -> None:
    desc = tmp_path / "cxr.yaml"
    desc.write_text(f"root: {synth_root / 'cxr'}\nlabels: {{0: background, lung: 1}}\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"cxr\.yaml: bad 'labels': labels mixes values and names"):
        load_dataset(desc)
    with pytest.raises(ValueError, match="bad 'labels' option: label value -1 is negative"):
        load_dataset(synth_root / "cxr", labels=[0, -1])


@pytest.mark.parametrize(
    ("kind", "expected"),
    [
        ("luna16", {0: "background", 1: "lung"}),
        ("dsb", {0: "background", 1: "nucleus"}),
        ("cxr", None),
        ("volumes", None),
        ("brats", None),
    ],
)
def test_layout_declarations(synth_root: Path, kind: str, expected) -> None:
    index = load_dataset(synth_root / kind)
    assert index.labels == expected
    assert index[0].mask_spec.labels == (tuple(expected) if expected else None)


def test_luna16_override_and_keyword_labels(synth_root: Path) -> None:
    assert load_dataset(synth_root / "luna16", label_map={3: 1, 4: 2, 5: 3}, labels=None).labels is None
    named = load_dataset(synth_root / "luna16", label_map={3: 1, 4: 2, 5: 0}, labels={0: "bg", 1: "right", 2: "left"})
    assert named.labels == {0: "bg", 1: "right", 2: "left"} and set(np.unique(named[0].load().label)) == {0, 1, 2}
    assert load_dataset(synth_root / "brats", labels=[0, 1, 2, 3, 4]).labels == {
        0: "background",
        **{v: str(v) for v in (1, 2, 3, 4)},
    }


def test_inspect_reports_declared_labels(synth_root: Path, tmp_path: Path) -> None:
    r = inspect_dataset(synth_root / "luna16")
    assert r["declared_labels"] == {"0": "background", "1": "lung"}
    json.dumps(r)
    assert inspect_dataset(synth_root / "cxr")["declared_labels"] is None
    unseen = inspect_dataset(synth_root / "cxr", labels={0: "background", 1: "lung", 2: "heart"})
    assert any("2 (heart)" in w for w in unseen["warnings"])


# ------------------------------------------------------------------------------------------------- the registry
def test_unknown_layout_lists_the_known_ones(synth_root: Path) -> None:
    known = ", ".join(list_layouts())
    assert known == "case_folders, class_folders, dsb2018, folders, list, luna16, msd"
    with pytest.raises(ValueError, match=f"unknown layout 'nope'; known: {known}$"):
        load_dataset(synth_root / "cxr", layout="nope")
    with pytest.raises(ValueError, match="unknown layout 'nope'"):
        get_layout("nope")


def test_register_layout_detect_and_plain_tuple(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, synth_root) -> None:
    monkeypatch.setattr(registry, "_LAYOUTS", dict(registry._LAYOUTS))  # registrations vanish after the test
    src = load_dataset(synth_root / "cxr")

    @register_layout("pairs", ("suffix",), detect=lambda p: p.is_dir() and (p / "PAIRS").is_file(), order=5)
    def _scan(root: Path, o: dict):
        refs = [CaseRef(r.case_id, r.image_paths, r.mask_paths) for r in src]
        return refs, [], []  # a plain 3-tuple: declares what the labels option says

    (tmp_path / "PAIRS").touch()
    index = load_dataset(tmp_path)
    assert index.layout == "pairs" and len(index) == 4 and index.labels is None
    assert load_dataset(tmp_path, labels=[0, 1]).labels == {0: "background", 1: "1"}
    assert isinstance(ScanResult(*_scan(tmp_path, {})), ScanResult)
    with pytest.raises(ValueError, match="already registered"):
        register_layout("folders")(_scan)
    with pytest.raises(ValueError, match="not among its options"):
        register_layout("other", ("a",), b=1)(_scan)


# ---------------------------------------------------------------------------------------- CaseRef.target, lists
def test_csv_class_column_becomes_target(synth_root: Path, tmp_path: Path) -> None:
    refs = load_dataset(synth_root / "cxr").cases
    rows = ["image,mask,class"]
    rows.append(f"{refs[0].image_paths[0]},{refs[0].mask_paths[0]},1")
    rows.append(f"{refs[1].image_paths[0]},,0")  # labelled for classification only
    rows.append(f"{refs[2].image_paths[0]},{refs[2].mask_paths[0]},")  # segmentation only
    rows.append(f"{refs[3].image_paths[0]},,")  # unlabelled
    (tmp_path / "cases.csv").write_text("\n".join(rows) + "\n", encoding="utf-8")
    index = load_dataset(tmp_path / "cases.csv")
    assert [c.target for c in index] == [1, 0, None, None]
    assert [c.has_mask for c in index] == [True, False, True, False]  # the target is not a mask
    assert [c.case_id for c in index.with_targets()] == [refs[0].case_id, refs[1].case_id]
    assert [c.case_id for c in index.labelled()] == [refs[0].case_id, refs[2].case_id]
    assert index.labels is None
    assert index[1].load().label is None


@pytest.mark.parametrize("key", ["target", "label_class", "Class"])
def test_json_target_keys(synth_root: Path, tmp_path: Path, key: str) -> None:
    refs = load_dataset(synth_root / "cxr").cases
    rows = [{"image": str(r.image_paths[0]), key: i % 2} for i, r in enumerate(refs)]
    (tmp_path / "cases.json").write_text(json.dumps(rows), encoding="utf-8")
    index = load_dataset(tmp_path / "cases.json")
    assert [c.target for c in index] == [0, 1, 0, 1] and len(index.with_targets()) == 4 and not index.labelled()


def test_bad_class_value_names_the_list(synth_root: Path, tmp_path: Path) -> None:
    ref = load_dataset(synth_root / "cxr")[0]
    (tmp_path / "cases.csv").write_text(f"image,class\n{ref.image_paths[0]},tb\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"cases\.csv: row 1: class 'tb' is not a non-negative integer"):
        load_dataset(tmp_path / "cases.csv")
    with pytest.raises(ValueError, match="target must be a non-negative int"):
        CaseRef("a", ref.image_paths, target=-1)


@pytest.mark.parametrize("ending", [".csv", ".json"])
def test_target_survives_save_and_dict_round_trips(synth_root: Path, tmp_path: Path, ending: str) -> None:
    refs = load_dataset(synth_root / "cxr").cases
    cases = [
        CaseRef(r.case_id, r.image_paths, r.mask_paths if i % 2 else (), f"P{i // 2}", target=[2, None, 0, 1][i])
        for i, r in enumerate(refs)
    ]
    back = load_dataset(save_case_list(cases, tmp_path / f"cases{ending}"))
    assert [c.target for c in back] == [2, None, 0, 1]
    assert [c.patient_id for c in back] == ["P0", "P0", "P1", "P1"]
    assert [c.has_mask for c in back] == [False, True, False, True]
    assert all(CaseRef.from_dict(c.to_dict()) == c for c in cases)
    assert CaseRef.from_dict(cases[0].to_dict()).target == 2
    assert cases[0] != CaseRef(cases[0].case_id, cases[0].image_paths, (), "P0", target=1)  # part of equality
    # no target anywhere: the list is written as before (no target column)
    plain = save_case_list(refs, tmp_path / f"plain{ending}").read_text(encoding="utf-8")
    assert "target" not in plain


# ---------------------------------------------------------------------------------------------------- real data
@pytest.mark.realdata
def test_real_hippocampus_as_msd_declares_anterior_posterior(shared_data: Path, tmp_path: Path) -> None:
    """The shared copy is a plain ``images/`` + ``labels/`` folder (declares nothing); laid out as MSD Task04 with
    its dataset.json labels, the same cases declare Anterior/Posterior and pass the mask check."""
    src = shared_data / "msd_hippocampus"
    folders = load_dataset(src)
    assert folders.layout == "folders" and folders.labels is None
    root = tmp_path / "Task04_Hippocampus"
    training = []
    for ref in folders[:3]:
        for sub, p in (("imagesTr", ref.image_paths[0]), ("labelsTr", ref.mask_paths[0])):
            (root / sub).mkdir(parents=True, exist_ok=True)
            dst = root / sub / p.name
            try:
                os.symlink(p, dst)
            except OSError:
                shutil.copy(p, dst)
        training.append(
            {"image": f"./imagesTr/{ref.image_paths[0].name}", "label": f"./labelsTr/{ref.mask_paths[0].name}"}
        )
    dj = {
        "name": "Hippocampus",
        "modality": {"0": "MRI"},
        "labels": {"0": "background", "1": "Anterior", "2": "Posterior"},
    }
    (root / "dataset.json").write_text(json.dumps(dj | {"numTraining": 3, "training": training}), encoding="utf-8")
    index = load_dataset(root)
    assert index.layout == "msd" and len(index) == 3 and index.labels == HIPPOCAMPUS
    seen = set()
    for ref in index.check():
        seen |= set(np.unique(ref.load().label).tolist())
    assert seen == {0, 1, 2}
