"""The tuberculosis classifier ``cxr-tb`` (AG-Sononet, issue 12), once it is shipped: offline, small, documented,
and `agseg predict --model cxr-tb xray.png --out DIR` writes probabilities, attention maps and boxes. Skipped until
``src/agseg/assets/models/cxr-tb`` exists (``ship_model(run, "cxr-tb", info)``)."""

from __future__ import annotations

import csv

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from agseg.data.synthetic import chest_phantom
from agseg.inference.pretrained import list_pretrained, pretrained_info, pretrained_path

pytestmark = pytest.mark.skipif("cxr-tb" not in list_pretrained(), reason="cxr-tb is not shipped yet")


def test_cxr_tb_is_small_documented_and_a_gated_classifier():
    import json

    assert (pretrained_path("cxr-tb") / "model.safetensors").stat().st_size <= 10 * 2**20
    info = pretrained_info("cxr-tb")
    assert info["trained_on"] and info["licence"] and info["cv_performance"]
    assert "research" in json.dumps(info).lower()  # research use only, stated with the model
    meta = json.loads((pretrained_path("cxr-tb") / "model.json").read_text(encoding="utf-8"))
    assert meta["task"] == "classification" and meta["model_name"].startswith("ag_sononet")


def test_cxr_tb_predicts_probabilities_maps_and_boxes_offline(tmp_path):
    from agseg.cli import app

    Image.fromarray(chest_phantom(512, rng=5)[0]).save(tmp_path / "xray.png")
    res = CliRunner().invoke(app, ["predict", "--model", "cxr-tb", str(tmp_path / "xray.png"), "--out",
                                   str(tmp_path / "o")])  # fmt: skip
    assert res.exit_code == 0, res.output
    with (tmp_path / "o" / "predictions.csv").open(encoding="utf-8") as fh:
        (row,) = list(csv.DictReader(fh))
    assert row["case"] == "xray" and row["predicted_class"] in ("normal", "tuberculosis")
    assert float(row["prob_normal"]) + float(row["prob_tuberculosis"]) == pytest.approx(1.0, abs=1e-5)
    with (tmp_path / "o" / "boxes.csv").open(encoding="utf-8") as fh:
        boxes = list(csv.DictReader(fh))
    assert boxes[0]["case"] == "xray" and boxes[0]["gate"] == "box"
    assert np.asarray(Image.open(tmp_path / "o" / "xray_boxes.png")).shape == (512, 512, 3)
    assert np.asarray(Image.open(tmp_path / "o" / "xray_att_gate0.png")).shape == (512, 512)
