"""The design card's one direction: core <- rules <- workers <- agent.

No module imports from a layer above its own, at module level or inside a function.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
LAYERS = ["core", "rules", "workers", "agent"]  # bottom to top


def imports(path: Path) -> list[tuple[int, str]]:
    tree = ast.parse(path.read_text(), str(path))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append((node.lineno, node.module))
    return found


def upward_imports(layer: str) -> list[str]:
    allowed = set(LAYERS[: LAYERS.index(layer) + 1])
    errors = []
    for path in sorted((ROOT / layer).rglob("*.py")):
        for line, module in imports(path):
            top = module.split(".")[0]
            if top in LAYERS and top not in allowed:
                errors.append(f"{path.relative_to(ROOT)}:{line}: imports {module} (layer {top} is above {layer})")
    return errors


@pytest.mark.parametrize("layer", LAYERS)
def test_no_layer_imports_a_layer_above_it(layer):
    assert upward_imports(layer) == []


def test_the_check_sees_an_upward_import(tmp_path):
    bad = tmp_path / "m.py"
    bad.write_text("def f():\n    from agent.cli import main\n")
    assert (2, "agent.cli") in imports(bad)
