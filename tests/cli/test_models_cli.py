"""``agseg models``: listing, one model's FLOPs and shapes, the seed 001 comparison, and clear errors."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from agseg.cli import app
from agseg.nets.summary import summarize

runner = CliRunner()


def test_models_lists_registered_nets_with_params():
    res = runner.invoke(app, ["models", "--json"])
    assert res.exit_code == 0, res.output
    rows = {r["name"]: r for r in json.loads(res.output)}
    assert {"unet", "attention_unet"} <= set(rows)
    assert rows["unet_ct"]["params"] == summarize("unet_ct").params


def test_models_one_net_with_input_shape():
    res = runner.invoke(
        app, ["models", "attention_unet", "--input", "1x1x40x40x24", "--set", "channels=4,8,16", "--json"]
    )
    assert res.exit_code == 0, res.output
    info = json.loads(res.output)
    assert info["output_shapes"] == [[1, 1, 40, 40, 24]]
    # the FLOPs and parameters of that net at that input, with the --set override applied (not the default widths)
    ref = summarize("attention_unet", (1, 1, 40, 40, 24), channels=[4, 8, 16])
    assert info["flops"] == ref.flops and info["params"] == ref.params
    assert ref.flops != summarize("attention_unet", (1, 1, 40, 40, 24)).flops
    text = runner.invoke(app, ["models", "unet", "--input", "1x1x64x64", "--set", "channels=4,8"])
    assert "FLOPs" in text.output and "(1, 1, 64, 64)" in text.output


def test_models_info_compares_with_seed001_table1():
    res = runner.invoke(app, ["models", "--info", "--json"])
    assert res.exit_code == 0, res.output
    rows = {r["model"]: r for r in json.loads(res.output)}
    assert rows["unet_ct"]["paper_params"] == 5.88e6
    assert rows["attention_unet_ct"]["paper_params"] == 6.40e6
    assert rows["attention_unet_ct"]["flops"] > rows["unet_ct"]["flops"]


def test_unknown_model_and_bad_shape_are_clear_errors():
    res = runner.invoke(app, ["models", "vnet"])
    assert res.exit_code == 2
    assert "unknown model 'vnet'" in res.output and "attention_unet" in res.output
    res = runner.invoke(app, ["models", "unet", "--input", "1xbanana"])
    assert res.exit_code == 2 and "input shape" in res.output


def test_a_shipped_name_shows_that_model_and_info_with_a_net_name_is_refused():
    runner = CliRunner()
    # was: "unknown model 'cxr-lungs'", and `--info NAME` printed seed 001 Table 1 whatever NAME was
    for args in (["models", "cxr-lungs"], ["models", "--info", "cxr-lungs"]):
        res = runner.invoke(app, args)
        assert res.exit_code == 0 and res.output.startswith("cxr-lungs:") and "hippocampus" not in res.output
    res = runner.invoke(app, ["models", "--info", "attention_unet"])
    assert res.exit_code == 2 and "takes no net name" in res.output
