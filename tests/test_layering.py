"""The package's layers: inference and training never import each other; training imports no plotting."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "agseg"


def _imports(folder: Path) -> dict[str, set[str]]:
    """``{module file: modules it imports}`` for every module under ``folder`` (also imports inside functions)."""
    out: dict[str, set[str]] = {}
    for f in sorted(folder.rglob("*.py")):
        names: set[str] = set()
        for node in ast.walk(ast.parse(f.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                names |= {a.name for a in node.names}
            elif isinstance(node, ast.ImportFrom):
                module = node.module or ""
                if node.level:  # a relative import: resolve it against this file's package
                    package = ["agseg", *f.relative_to(folder.parent).parent.parts]
                    package = package[: len(package) - node.level + 1]
                    module = ".".join([*package, module] if module else package)
                names.add(module)
                names |= {f"{module}.{a.name}" for a in node.names}
        out[str(f.relative_to(folder))] = names
    return out


@pytest.mark.parametrize(
    ("package", "forbidden"),
    [("inference", ("agseg.training",)), ("training", ("agseg.inference", "agseg.viz"))],
)
def test_layers_do_not_import_each_other(package, forbidden):
    found = {
        mod: sorted(n for n in names if n.startswith(forbidden))
        for mod, names in _imports(SRC / package).items()
        if any(n.startswith(forbidden) for n in names)
    }
    assert not found, f"agseg.{package} imports {forbidden}: {found}"


def test_the_check_sees_lazy_and_plain_imports(tmp_path):
    # the check can fail: imports inside functions and `import a.b` forms are found
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "m.py").write_text(
        "def f():\n    from agseg.training.trainer import Trainer\n", encoding="utf-8"
    )
    (tmp_path / "n.py").write_text(
        "import agseg.viz.attention as v\nfrom ..training import trainer\n", encoding="utf-8"
    )
    found = _imports(tmp_path)
    assert "agseg.training.trainer" in found["sub/m.py"] and "agseg.viz.attention" in found["n.py"]
    assert "agseg.training" in found["n.py"]  # a relative import, resolved


_NON_TEXT_OPENERS = ("Image", "tarfile", "zipfile", "gzip", "os", "h5py", "sitk", "io")


def _text_io_without_encoding(source: str) -> list[int]:
    """Lines of ``open`` / ``read_text`` / ``write_text`` calls in text mode that leave the encoding to the locale."""
    lines = []
    for node in ast.walk(ast.parse(source)):
        if not isinstance(node, ast.Call):
            continue
        f = node.func
        name = f.attr if isinstance(f, ast.Attribute) else getattr(f, "id", None)
        if name not in ("open", "read_text", "write_text") or any(k.arg == "encoding" for k in node.keywords):
            continue
        if name == "open":
            if isinstance(f, ast.Attribute) and getattr(f.value, "id", None) in _NON_TEXT_OPENERS:
                continue
            pos = 1 if isinstance(f, ast.Name) else 0
            modes = [a for a in node.args[pos : pos + 1]] + [k.value for k in node.keywords if k.arg == "mode"]
            if any(isinstance(m, ast.Constant) and "b" in str(m.value) for m in modes):
                continue
        lines.append(node.lineno)
    return lines


def test_text_files_are_read_and_written_as_utf8():
    # CI (and many a cluster node) runs with an ASCII locale: a report or CSV with a "±" then fails to read back
    found = {
        str(f.relative_to(SRC)): bad
        for f in sorted(SRC.rglob("*.py"))
        if (bad := _text_io_without_encoding(f.read_text(encoding="utf-8")))
    }
    assert not found, f"text I/O that depends on the locale's encoding (add encoding='utf-8'): {found}"


def test_the_encoding_check_can_fail():
    src = "p.read_text()\nopen(x)\nopen(x, 'rb')\np.open('w', encoding='utf-8')\np.write_text(t)\nImage.open(b)\n"
    assert _text_io_without_encoding(src) == [1, 2, 5]
