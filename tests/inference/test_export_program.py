"""torch.export programs (agseg export --format torch-export): the loaded program computes what the net computes."""

from __future__ import annotations

import json

import pytest
import torch
from typer.testing import CliRunner

from agseg.cli import app
from agseg.inference.bundle import load_bundle
from agseg.inference.export import PROGRAM_FILE, ExportError, export_program
from tests.inference.bundles import bundle_dir

runner = CliRunner()


def _run(tmp_path, name, kwargs):
    return bundle_dir(tmp_path, name, kwargs)


@pytest.mark.parametrize(
    ("name", "kwargs", "shapes"),
    [
        ("attention_unet", {"spatial_dims": 2, "in_channels": 1, "out_channels": 3, "channels": [4, 8, 16]},
         [(3, 1, 40, 48), (1, 1, 33, 57)]),
        ("unet", {"spatial_dims": 3, "in_channels": 1, "out_channels": 1, "channels": [4, 8]}, [(2, 1, 12, 16, 20)]),
    ],
)  # fmt: skip
def test_the_loaded_program_computes_the_nets_function(tmp_path, name, kwargs, shapes):
    run, net = _run(tmp_path, name, kwargs)
    out = export_program(run, tmp_path / "exported")
    assert sorted(p.name for p in out.iterdir()) == ["model.json", PROGRAM_FILE, "model.safetensors"]
    meta = json.loads((out / "model.json").read_text(encoding="utf-8"))["info"]["export"]
    assert meta["format"] == "torch.export" and max(meta["max_abs_diff"].values()) <= 1e-4
    program = torch.export.load(str(out / PROGRAM_FILE)).module()  # no agseg needed for this
    for shape in shapes:  # batch and sizes the export never saw
        x = torch.randn(shape)
        with torch.no_grad():
            ref = net(x)
            ref = ref[0] if isinstance(ref, (list, tuple)) else ref
            torch.testing.assert_close(program(x), ref, rtol=1e-4, atol=1e-4)
    again, _ = load_bundle(out)  # the folder is a PyTorch bundle as well
    assert again.state_dict().keys() == net.state_dict().keys()


def test_a_program_that_disagrees_is_not_kept(tmp_path):
    run, _ = _run(tmp_path, "unet", {"spatial_dims": 2, "in_channels": 1, "out_channels": 1, "channels": [4, 8]})
    with pytest.raises(ExportError, match="differs from PyTorch"):
        export_program(run, tmp_path / "exported", atol=-1.0)  # no difference is <= -1
    assert not (tmp_path / "exported").exists()


def test_export_torch_export_from_the_command_line(tmp_path):
    run, _ = _run(tmp_path, "unet", {"spatial_dims": 2, "in_channels": 1, "out_channels": 1, "channels": [4, 8]})
    res = runner.invoke(app, ["export", str(run), "--format", "torch-export", "--out", str(tmp_path / "e")])
    assert res.exit_code == 0, res.output
    assert "model.pt2" in res.output and "torch.export.load" in res.output
    again = runner.invoke(app, ["export", str(run), "--format", "torch-export", "--out", str(tmp_path / "e")])
    assert again.exit_code != 0 and "not empty" in again.output  # an existing export is never replaced unasked
    bad = runner.invoke(app, ["export", str(run), "--format", "torchscript", "--out", str(tmp_path / "f")])
    assert bad.exit_code == 2 and "valid formats: onnx, torch-export" in bad.output


def test_an_overwrite_in_the_other_format_removes_the_stale_export(tmp_path):
    pytest.importorskip("onnxruntime", reason="needs onnxruntime (pip install 'agseg[onnx]')")
    pytest.importorskip("onnxscript", reason="needs onnxscript (pip install 'agseg[onnx]')")
    from agseg.inference.export import ONNX_FILE, export_onnx

    run, _ = _run(tmp_path, "unet", {"spatial_dims": 2, "in_channels": 1, "out_channels": 1, "channels": [4, 8]})
    out = tmp_path / "e"
    export_onnx(run, out)
    export_program(run, out, overwrite=True)
    assert not (out / ONNX_FILE).exists() and (out / PROGRAM_FILE).is_file()
    export_onnx(run, out, overwrite=True)
    assert (out / ONNX_FILE).is_file() and not (out / PROGRAM_FILE).exists()


def test_an_overwrite_that_fails_while_moving_puts_the_earlier_export_back(tmp_path, monkeypatch):
    """A failure after the first new file moved in used to leave the folder without model.json (the earlier export
    lost); now the new files go and the earlier export is back, file for file (the same inodes: renamed back)."""
    import pathlib

    run, _ = _run(tmp_path, "unet", {"spatial_dims": 2, "in_channels": 1, "out_channels": 1, "channels": [4, 8]})
    out = tmp_path / "e"
    export_program(run, out)
    before = {p.name: (p.stat().st_ino, p.read_bytes()) for p in out.iterdir()}
    real = pathlib.Path.replace
    failed = []

    def replace(self, target):  # the new program's move into the folder fails once
        if pathlib.Path(target) == out / PROGRAM_FILE and self.parent.name != ".previous" and not failed:
            failed.append(1)
            raise OSError("disk full")
        return real(self, target)

    monkeypatch.setattr(pathlib.Path, "replace", replace)
    with pytest.raises(ExportError, match="disk full.*back as it was"):
        export_program(run, out, overwrite=True)
    assert failed
    assert {p.name: (p.stat().st_ino, p.read_bytes()) for p in out.iterdir()} == before
    load_bundle(out)


def test_a_failing_move_that_cannot_be_undone_says_the_folder_is_incomplete(tmp_path, monkeypatch):
    """Should putting the earlier export back fail too, the folder holds no model.json (which load_bundle refuses),
    never an old description beside new weights, and the error says so."""
    import pathlib

    run, _ = _run(tmp_path, "unet", {"spatial_dims": 2, "in_channels": 1, "out_channels": 1, "channels": [4, 8]})
    out = tmp_path / "e"
    export_program(run, out)
    real = pathlib.Path.replace

    def replace(self, target):
        if pathlib.Path(target).name == PROGRAM_FILE and pathlib.Path(target).parent == out:
            raise OSError("disk full")
        return real(self, target)

    monkeypatch.setattr(pathlib.Path, "replace", replace)
    old_program = (out / PROGRAM_FILE).read_bytes()
    (out / "previous-export").mkdir()  # an earlier failure's files: before the fix the rename onto it failed
    (out / "previous-export" / PROGRAM_FILE).write_bytes(b"earlier")  # and the files went with the temporary folder
    with pytest.raises(ExportError, match="no complete model now.*previous-export-2"):
        export_program(run, out, overwrite=True)
    assert not (out / "model.json").exists()
    assert (out / "previous-export-2" / PROGRAM_FILE).read_bytes() == old_program  # kept, not deleted with tmp
    assert (out / "previous-export" / PROGRAM_FILE).read_bytes() == b"earlier"
    with pytest.raises(Exception, match="model.json"):
        load_bundle(out)
