"""The layering of docs/design.md, checked on the source: each layer imports only those above."""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# Layer -> top-level names it must never import.
FORBIDDEN = {
    "prnas/space": {"torch", "torchvision", "ray", "prnas.nn", "prnas.data", "prnas.runtime",
                    "prnas.search", "prnas.retrain", "prnas.tune", "analysis"},
    "prnas/nn": {"ray", "prnas.data", "prnas.search", "prnas.retrain", "prnas.tune", "analysis"},
    "prnas/data": {"ray", "prnas.nn", "prnas.search", "prnas.retrain", "prnas.tune", "analysis"},
    "prnas/runtime": {"ray", "prnas.search", "prnas.retrain", "prnas.tune", "analysis"},
    "prnas/search": {"ray", "prnas.retrain", "prnas.tune", "analysis"},
    "prnas/retrain": {"ray", "prnas.search", "prnas.tune", "analysis"},
    "analysis": {"ray", "prnas.tune"},
    # Using a trained model needs no Ray, no search and no training code.
    "prnas/evaluate": {"ray", "prnas.search", "prnas.retrain", "prnas.tune", "analysis"},
    "prnas/export": {"ray", "prnas.search", "prnas.retrain", "prnas.tune", "analysis"},
}
# Single-module layers: file -> names it must never import.
FORBIDDEN_FILES = {
    "prnas/model_file.py": {"ray", "prnas.data", "prnas.search", "prnas.retrain",
                            "prnas.tune", "analysis"},
    "prnas/cost.py": {"ray", "prnas.data", "prnas.search", "prnas.retrain", "prnas.tune",
                      "analysis"},
    # Plain names: the in-process engine reads them without pandas or pyarrow.
    "prnas/filenames.py": {"torch", "pandas", "pyarrow", "ray", "prnas", "analysis"},
    # The one cycle record: the in-process engine makes it, without pandas or pyarrow.
    "prnas/cycle_record.py": {"torch", "pandas", "pyarrow", "ray", "prnas.nn", "prnas.data",
                              "prnas.runtime", "prnas.search", "prnas.retrain", "prnas.tune",
                              "prnas.records", "analysis"},
    # The on-disk contract: the Tune layer writes through it, analysis reads through it.
    "prnas/records.py": {"ray", "torch", "prnas.nn", "prnas.data", "prnas.runtime",
                         "prnas.search", "prnas.retrain", "prnas.tune", "analysis"},
}


def _imports(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


@pytest.mark.parametrize("layer", sorted(FORBIDDEN))
def test_layer_imports_nothing_below_it(layer):
    files = sorted((ROOT / layer).rglob("*.py"))
    assert files
    for path in files:
        for name in _imports(path):
            bad = [f for f in FORBIDDEN[layer] if name == f or name.startswith(f + ".")]
            assert not bad, f"{path.relative_to(ROOT)} imports {name} ({layer} must not)"


@pytest.mark.parametrize("module", sorted(FORBIDDEN_FILES))
def test_module_imports_nothing_below_it(module):
    for name in _imports(ROOT / module):
        bad = [f for f in FORBIDDEN_FILES[module] if name == f or name.startswith(f + ".")]
        assert not bad, f"{module} imports {name}"


_MODULES = sorted(
    ".".join(p.relative_to(ROOT).with_suffix("").parts)
    for d in ("prnas", "analysis") for p in (ROOT / d).rglob("*.py")
)


@pytest.mark.parametrize("module", _MODULES)
def test_every_module_imports(module):
    """The fast lane (pytest -m "not slow") imports every module at least, so a module no
    fast test reaches still fails there when it stops importing."""
    import importlib

    importlib.import_module(module.removesuffix(".__init__"))

