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
    (tmp_path / "sub" / "m.py").write_text("def f():\n    from agseg.training.trainer import Trainer\n")
    (tmp_path / "n.py").write_text("import agseg.viz.attention as v\nfrom ..training import trainer\n")
    found = _imports(tmp_path)
    assert "agseg.training.trainer" in found["sub/m.py"] and "agseg.viz.attention" in found["n.py"]
    assert "agseg.training" in found["n.py"]  # a relative import, resolved
