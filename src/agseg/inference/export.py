"""Export a trained model to ONNX and run it with onnxruntime.

``export_onnx`` writes a folder that is a complete agseg model twice over: ``model.json`` + ``model.safetensors``
(PyTorch, as any bundle) and ``model.onnx`` (the net's eval-mode forward, float32, dynamic batch and spatial sizes),
so ``agseg predict --run FOLDER --engine onnxruntime`` applies the same preprocessing, sliding windows, label
decoding and post-processing as PyTorch prediction, with onnxruntime computing the net. The export is checked before
it is kept: onnxruntime and PyTorch must agree within ``atol`` (1e-4 by default) on a random input of the export
size and on one of an odd size; the differences are stored in ``model.json`` (``info.export``).

The graph comes from ``torch.onnx.export(..., dynamo=True)`` (PyTorch's exporter; it needs the ``onnx`` and
``onnxscript`` packages, ``pip install "agseg[onnx]"``). Attention maps are not exported: ``--attention`` needs the
PyTorch engine.
"""

from __future__ import annotations

import contextlib
import json
import logging
import tempfile
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

from agseg.inference.bundle import BUNDLE_JSON, BUNDLE_WEIGHTS, ModelBundle, load_bundle
from agseg.nets.base import main_output, min_input_shape_of, prune_model, spatial_dims_of

__all__ = ["ONNX_FILE", "PROGRAM_FILE", "ExportError", "OnnxModel", "export_onnx", "export_program", "find_onnx"]

ONNX_FILE = "model.onnx"
PROGRAM_FILE = "model.pt2"
_EXTRA = 'the ONNX engine needs onnxruntime (and, to export, onnx and onnxscript): pip install "agseg[onnx]"'


class ExportError(ValueError):
    """An export that cannot be made or does not match PyTorch, or the ONNX packages are missing (one line)."""


def _need(module: str):
    try:
        return __import__(module)
    except ImportError:
        raise ExportError(_EXTRA) from None


class _MainOutput(nn.Module):
    """The net's main output alone (an eval-mode forward that returns a list gives its first entry)."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return main_output(self.net(x))


def _example_shape(net: nn.Module, bundle: ModelBundle, odd: bool = False) -> tuple[int, ...]:
    dims = spatial_dims_of(net, bundle.model_kwargs.get("spatial_dims", 2)) or 2
    base = min_input_shape_of(net, dims)
    size = [max(int(b) * 2, 16 if dims == 3 else 32) for b in base]
    if bundle.patch_size:  # the training patch when it is small enough to export quickly
        size = [min(int(p), s * 2) for p, s in zip(bundle.patch_size, size, strict=False)]
    if odd:
        size = [s + 3 for s in size]
    return (1, int(bundle.model_kwargs.get("in_channels", 1)), *size)


def _check(run, net: nn.Module, shape: tuple[int, ...], seed: int, label: str) -> float:
    """Largest difference between ``run`` (the exported graph) and the eager ``net`` on a random input of ``shape``."""
    x = torch.from_numpy(np.random.default_rng(seed).standard_normal(shape).astype(np.float32))
    with torch.no_grad():
        ref = net(x).float().numpy()
    got = np.asarray(run(x))
    if got.shape != ref.shape:
        raise ExportError(f"{label}'s output has shape {got.shape}, PyTorch's {ref.shape} (input {shape})")
    return float(np.abs(got - ref).max())


_EXPORT_FILES = (BUNDLE_JSON, ONNX_FILE, PROGRAM_FILE, BUNDLE_WEIGHTS)  # model.json first: without it, incomplete


def _free_name(folder: Path, name: str) -> Path:
    """``folder / name``, or ``name-2``, ``name-3``, ... : the first that does not exist (an earlier one is kept)."""
    path, n = folder / name, 1
    while path.exists():
        n += 1
        path = folder / f"{name}-{n}"
    return path


def _move_in(tmp: Path, out: Path, file: str) -> None:
    """Move a checked export from ``tmp`` into ``out``, replacing an earlier export there (both formats' files).

    The earlier files are first renamed aside into ``tmp`` (model.json first, so that at no moment does an old
    description sit beside new weights); the new files go in with model.json last (a folder holding it is complete).
    Should a move fail, the new files are taken out and the earlier export is put back as it was; only if that fails
    too is the folder left without model.json (incomplete, which ``load_bundle`` refuses), as the error says."""
    aside = tmp / ".previous"
    aside.mkdir()
    new_files = (BUNDLE_WEIGHTS, file, BUNDLE_JSON)
    try:
        for name in _EXPORT_FILES:
            if (out / name).is_file():
                (out / name).replace(aside / name)
        for name in new_files:
            (tmp / name).replace(out / name)
    except BaseException as err:  # an interrupt too: the earlier export must not vanish with the temporary folder
        # what to undo is read off the folders, not off lists an interrupt could leave a step behind
        kept = [name for name in _EXPORT_FILES if (aside / name).is_file()]
        try:
            for name in new_files:
                if not (tmp / name).exists():  # moved in
                    (out / name).unlink(missing_ok=True)
            for name in reversed(kept):  # model.json last
                (aside / name).replace(out / name)
        except OSError as again:
            keep = _free_name(out, "previous-export")
            try:
                aside.replace(keep)  # what could not be put back, kept beside (never deleted with tmp)
                where = f"the earlier files that could not be put back are in {keep}"
            except OSError:
                where = f"the earlier files could not be kept either ({aside})"
            raise ExportError(
                f"moving the export into {out} failed ({err}), and so did putting the earlier export back ({again}): "
                f"{out} has no complete model now (no model.json); {where}; export again"
            ) from err
        if not isinstance(err, OSError):
            raise
        after = "the earlier export there is back as it was" if kept else "nothing of it was kept"
        raise ExportError(f"moving the export into {out} failed: {err}; {after}") from err


def _export(source, out_dir, prune, atol, overwrite, *, file: str, label: str, write, extra: dict) -> Path:
    """The export flow both formats share: the folder checks, the graph net, ``write(graph_net, shape, dynamic, path)
    -> run`` into a temporary folder, the check of ``run`` against PyTorch on two inputs, the bundle beside it, and
    the files moved into ``out_dir`` only then (nothing of a failed export stays behind, and an export it was to
    replace is put back: :func:`_move_in`)."""
    net, bundle = load_bundle(source)
    out = Path(out_dir)
    src = Path(source)
    src_dirs = {src.resolve(), (src / "model").resolve()} if src.is_dir() else {src.parent.resolve()}
    if out.resolve() in src_dirs:
        raise FileExistsError(f"{out}: the export goes to a new folder, not the source's own")
    if out.exists() and not overwrite and any(not p.name.startswith(".export-") for p in out.iterdir()):
        raise FileExistsError(f"{out} is not empty: choose a new folder for the export or pass --overwrite")
    if overwrite and (out / "model" / BUNDLE_JSON).is_file():
        raise FileExistsError(f"{out} is a run folder: export into a folder of its own")
    level = bundle.prune if prune is None else (prune or None)
    graph_net = prune_model(net, int(level)) if level else net
    graph_net = _MainOutput(graph_net.eval().float()).eval()
    shape = _example_shape(net, bundle)
    dynamic = ({0: torch.export.Dim("batch", min=1), **{2 + i: torch.export.Dim.AUTO for i in range(len(shape) - 2)}},)
    made = not out.exists()
    out.mkdir(parents=True, exist_ok=True)
    try:
        with tempfile.TemporaryDirectory(dir=out, prefix=".export-") as tmp:
            run = write(graph_net, shape, dynamic, Path(tmp) / file)
            diffs = {"x".join(map(str, s)): _check(run, graph_net, s, seed, label) for seed, s in
                     enumerate((shape, _example_shape(net, bundle, odd=True)))}  # fmt: skip
            worst = max(diffs.values())
            if not worst <= atol:
                raise ExportError(f"{label} differs from PyTorch by {worst:.3g} (> {atol:g}) on {diffs}: not exported")
            info = dict(bundle.info)
            info["export"] = {**extra, "file": file, "prune": level, "max_abs_diff": diffs, "torch": torch.__version__}
            exported = ModelBundle.from_dict({**bundle.to_dict(), "info": info, "prune": level})
            exported.save(Path(tmp), net)  # the full net's weights: the folder is a PyTorch bundle as well
            _move_in(Path(tmp), out, file)
    except Exception as err:
        if made and not any(out.iterdir()):
            out.rmdir()
        if isinstance(err, ExportError):
            raise
        what = "ONNX export" if file == ONNX_FILE else "export"
        raise ExportError(f"the {what} failed: {type(err).__name__}: {' '.join(str(err).split())[:300]}") from err
    return out


def export_onnx(
    source: str | Path,
    out_dir: str | Path,
    *,
    prune: int | None = None,
    atol: float = 1e-4,
    overwrite: bool = False,
) -> Path:
    """Export the model at ``source`` (a run, bundle folder or checkpoint; see :func:`load_bundle`) to ``out_dir``.

    Args:
        source: what :func:`~agseg.inference.bundle.load_bundle` reads.
        out_dir: a new folder (an existing one only with ``overwrite``; never the source's own folder).
        prune: export the ANU-Net pruned to this level (the bundle's ``prune`` when None; 0: the full net).
        atol: largest accepted difference between onnxruntime and PyTorch (float32).
        overwrite: replace the files of an existing export in ``out_dir``.

    Returns:
        ``out_dir``. Raises :class:`ExportError` when the ONNX packages are missing or the check fails (nothing kept),
        ``FileExistsError`` when ``out_dir`` holds a model and ``overwrite`` is not set.
    """
    ort = _need("onnxruntime")
    _need("onnx")
    _need("onnxscript")

    def write(graph_net, shape, dynamic, path: Path):
        with warnings.catch_warnings(), torch.no_grad(), _quiet("torch.onnx", "onnx_ir", "onnxscript"):
            warnings.simplefilter("ignore")  # no_grad: no autograd-only ops (ops.dense_grad) traced
            torch.onnx.export(
                graph_net, (torch.zeros(shape),), str(path), input_names=["image"], output_names=["logits"],
                dynamo=True, dynamic_shapes=dynamic, external_data=False, verbose=False,
            )  # fmt: skip
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        return lambda x: session.run(None, {"image": x.numpy()})[0]

    return _export(source, out_dir, prune, atol, overwrite, file=ONNX_FILE, label="onnxruntime", write=write,
                   extra={"format": "onnx", "onnxruntime": ort.__version__})  # fmt: skip


@contextlib.contextmanager
def _quiet(*names: str):
    """The exporter's own chatter (about 45 lines per export: 'torchvision is not installed', every graph pass) kept
    to errors; a failure still raises and is reported as one :class:`ExportError` line."""
    if logging.getLogger("agseg").isEnabledFor(logging.DEBUG):  # --verbose: everything
        yield
        return
    loggers = [logging.getLogger(n) for n in names]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        yield
    finally:
        for lg, level in zip(loggers, levels, strict=True):
            lg.setLevel(level)


def find_onnx(source: str | Path) -> tuple[Path, ModelBundle]:
    """The ``model.onnx`` of an exported folder (``source`` or ``source/model``) and its bundle."""
    src = Path(source)
    for folder in (src, src / "model"):
        if (folder / ONNX_FILE).is_file() and (folder / BUNDLE_JSON).is_file():
            return folder / ONNX_FILE, ModelBundle.from_dict(
                json.loads((folder / BUNDLE_JSON).read_text(encoding="utf-8"))
            )
    from agseg.inference.pretrained import list_pretrained, pretrained_path

    shipped = [n for n in list_pretrained() if pretrained_path(n).resolve() == src.resolve()]
    what = f"--model {shipped[0]}" if shipped else str(src)  # a shipped model: by its name, not the package path
    raise FileNotFoundError(
        f"no {ONNX_FILE} in {src}: export it first (agseg export {what} --format onnx --out FOLDER) and predict "
        "with --run FOLDER"
    )


class OnnxModel(nn.Module):
    """An onnxruntime session behind the module interface agseg's prediction uses (float32 in, float32 out).

    ``spatial_dims`` and ``min_input_size`` come from the bundle so that padding and sliding windows work as for the
    PyTorch net; it has no gates (no attention maps) and no trainable parameters.
    """

    def __init__(self, path: str | Path, bundle: ModelBundle, threads: int | None = None) -> None:
        super().__init__()
        ort = _need("onnxruntime")
        opts = ort.SessionOptions()
        if threads:
            opts.intra_op_num_threads = int(threads)
        self.session = ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])
        with torch.device("meta"):  # for its sizes only
            net = bundle.build()
            if bundle.prune and hasattr(net, "pruned_kwargs"):
                net = type(net)(**net.pruned_kwargs(int(bundle.prune)))
        self.spatial_dims = spatial_dims_of(net, bundle.model_kwargs.get("spatial_dims", 2))
        self.min_input_size = tuple(min_input_shape_of(net, self.spatial_dims or 2))
        self.path = Path(path)
        # sliding windows ask for the device of the first parameter
        self._anchor = nn.Parameter(torch.empty(0), requires_grad=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        arr = np.ascontiguousarray(x.detach().float().cpu().numpy())
        return torch.from_numpy(self.session.run(None, {"image": arr})[0])

    def __getstate__(self):  # pragma: no cover - a session is not picklable
        raise TypeError("an OnnxModel cannot be pickled; reopen it from its model.onnx")


def export_program(
    source: str | Path,
    out_dir: str | Path,
    *,
    prune: int | None = None,
    atol: float = 1e-4,
    overwrite: bool = False,
) -> Path:
    """Export the net as a ``torch.export`` program (``model.pt2``): PyTorch's own serialised graph.

    This is the format PyTorch develops in place of TorchScript (whose ``torch.jit.script`` / ``trace`` PyTorch
    deprecates): load it without agseg with ``torch.export.load("model.pt2").module()``, a module whose forward
    takes a float32 ``(B, C, *spatial)`` tensor and returns the main output's logits, with dynamic batch and
    spatial sizes, as the ONNX export. The same checks as :func:`export_onnx` before anything is kept: the program
    must agree with the eager net within ``atol`` on an input of the export size and on one of an odd size; the
    folder holds the bundle (``model.json`` + ``model.safetensors``) beside it.
    """

    def write(graph_net, shape, dynamic, path: Path):
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")
            # an example batch of two (a batch of one would be specialised); every size dynamic where it can be
            auto = ({i: torch.export.Dim.AUTO for i in [0, *range(2, len(shape))]},)
            program = torch.export.export(graph_net, (torch.zeros((2, *shape[1:])),), dynamic_shapes=auto)
        torch.export.save(program, str(path))
        loaded = torch.export.load(str(path)).module()  # what a user loads, not the program in memory

        def run(x):
            with torch.no_grad():
                return loaded(x).float().numpy()

        return run

    return _export(source, out_dir, prune, atol, overwrite, file=PROGRAM_FILE, label="the exported program",
                   write=write, extra={"format": "torch.export"})  # fmt: skip
