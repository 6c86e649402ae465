"""Image-level classes from the layouts: ``class_pattern`` on any layout's case ids, the ``class_folders`` layout, and
the config option; the chest X-rays' ``_0``/``_1`` suffixes on the real data."""

from __future__ import annotations

from pathlib import Path

import pytest

from agseg.config import ConfigError, from_dict
from agseg.data import load_dataset, write_dataset
from agseg.data.errors import DataError
from agseg.data.layouts import detect_layout
from agseg.data.synthetic import write_shape_dataset


def test_class_pattern_reads_the_class_from_the_case_id(tmp_path):
    root = write_shape_dataset(tmp_path / "d", 6, layout="pattern", size=32, shape_size=(8, 12))
    index = load_dataset(root, class_pattern=r"_(\d)$")
    assert index.layout == "folders" and len(index) == 6
    assert [c.target for c in index] == [0, 1, 0, 1, 0, 1]
    assert all(c.case_id.endswith(f"_{c.target}") for c in index)
    assert [c.target for c in load_dataset(root)] == [None] * 6  # no pattern, no class


def test_class_pattern_with_class_names_and_its_problems(tmp_path):
    root = write_dataset(tmp_path / "cxr", "cxr", n=4, size=32)  # SYNCXR_0000_0.png ... SYNCXR_0003_1.png
    for p in sorted((root / "cxr").glob("*.png")):  # rename to ..._normal / ..._tb
        for folder in ("cxr", "masks"):
            q = root / folder / p.name
            q.rename(q.with_name(q.name.replace("_0.png", "_normal.png").replace("_1.png", "_tb.png")))
    labels = {0: "normal", 1: "tuberculosis", 2: "TB"}
    index = load_dataset(root, class_pattern=r"_([a-z]+)$", labels=labels, mask_threshold=127)
    assert [c.target for c in index] == [0, 2, 0, 2]
    with pytest.raises(DataError, match=r"class 'tb' is neither a number nor a class name \(classes: 0: normal"):
        load_dataset(root, class_pattern=r"_([a-z]+)$", labels={0: "normal", 1: "tuberculosis"})
    with pytest.raises(DataError, match=r"does not match class_pattern '_\(\\d\)\$'"):
        load_dataset(root, class_pattern=r"_(\d)$")
    assert len(load_dataset(root, class_pattern=r"_(\d)$|_(normal)$", skip_bad=True, labels=labels)) == 2


def test_a_csv_class_column_wins_over_the_pattern(tmp_path):
    csv = write_shape_dataset(tmp_path / "d", 4, layout="list", size=32, shape_size=(8, 12))
    index = load_dataset(csv, class_pattern=r"shape_00(\d)")  # the ids would say 0, 1, 2, 3
    assert [c.target for c in index] == [0, 1, 0, 1]


def test_class_folders_layout(tmp_path):
    root = write_shape_dataset(tmp_path / "d", 6, layout="class_folders", size=32, shapes=("none", "square", "cross"),
                               shape_size=(8, 12))  # fmt: skip
    assert detect_layout(root) == "class_folders"
    index = load_dataset(root)
    assert index.layout == "class_folders" and len(index) == 6
    # without labels the sorted folder names are the classes and the layout declares them
    assert index.labels == {0: "cross", 1: "none", 2: "square"}
    by_id = {c.case_id: c.target for c in index}
    assert by_id["shape_000"] == 1 and by_id["shape_001"] == 2 and by_id["shape_002"] == 0
    named = load_dataset(root, labels={0: "none", 1: "square", 2: "cross"})
    assert {c.case_id: c.target for c in named}["shape_001"] == 1 and named.labels[2] == "cross"
    with pytest.raises(DataError, match="class folder: class 'cross' is neither"):
        load_dataset(root, labels={0: "none", 1: "square"})


def test_numeric_class_folders_and_what_is_not_class_folders(tmp_path):
    root = write_shape_dataset(tmp_path / "d", 4, layout="class_folders", size=32, shapes=("none", "square"),
                               shape_size=(8, 12))  # fmt: skip
    for name, value in (("none", "0"), ("square", "1")):
        (root / name).rename(root / value)
    index = load_dataset(root)
    assert index.layout == "class_folders" and sorted(c.target for c in index) == [0, 0, 1, 1]
    assert index.labels is None
    assert detect_layout(write_dataset(tmp_path / "brats", "brats", n=2, size=(8, 16, 16))) == "case_folders"
    assert detect_layout(write_dataset(tmp_path / "cxr", "cxr", n=2, size=32)) == "folders"
    lone = tmp_path / "lone"
    (lone / "a").mkdir(parents=True)
    (lone / "b").mkdir()
    write_shape_dataset(tmp_path / "tmp", 2, layout="class_folders", size=32, shapes=("none", "square"),
                        shape_size=(8, 12))  # fmt: skip
    (tmp_path / "tmp" / "classes" / "none" / "shape_000.png").rename(lone / "a" / "x.png")
    (tmp_path / "tmp" / "classes" / "square" / "shape_001.png").rename(lone / "b" / "y.png")
    assert detect_layout(lone) == "case_folders"  # one image per folder: cases, not classes


def test_the_config_takes_class_pattern():
    cfg = from_dict({"data": {"path": "x", "options": {"class_pattern": r"_(\d)$"}}})
    assert cfg.data.layout_kwargs()["class_pattern"] == r"_(\d)$"
    with pytest.raises(ConfigError, match="class_pattern is not a valid regular expression"):
        from_dict({"data": {"path": "x", "options": {"class_pattern": "_(\\d$"}}})


@pytest.mark.realdata
def test_cxr_lungs_classes_from_the_names(shared_data: Path):
    index = load_dataset(shared_data / "cxr_lungs", class_pattern=r"_(\d)$")
    assert len(index) == 400 and {c.target for c in index} == {0, 1}
    counts = {t: sum(c.target == t for c in index) for t in (0, 1)}
    assert counts[0] + counts[1] == 400 and min(counts.values()) > 100
    assert all(c.case_id.endswith(f"_{c.target}") for c in index)
