"""The package reads like the pipeline: imports only go down the layers (docs/architecture.md)."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "spear_mm"
# Bottom to top. A module may import its own layer and the layers below it, never above.
# `testing` holds test fixtures and sits above the library it exercises.
LAYERS = ["errors", "schema", "runinfo", "io", "train", "merge", "eval", "analyze", "sweep",
          "pipeline", "cli", "testing"]  # fmt: skip


def _layer(path: Path) -> str:
    rel = path.relative_to(PACKAGE).with_suffix("")
    return rel.parts[0]


def _imports(path: Path):
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module:
            yield node.module
        elif isinstance(node, ast.Import):
            yield from (a.name for a in node.names)


def test_every_module_is_in_a_layer():
    found = {_layer(p) for p in PACKAGE.rglob("*.py")} - {"__init__", "__main__"}
    assert found <= set(LAYERS), sorted(found - set(LAYERS))


def test_imports_only_go_down():
    upward = []
    for path in PACKAGE.rglob("*.py"):
        src = _layer(path)
        if src not in LAYERS:
            continue
        for module in _imports(path):
            parts = module.split(".")
            if parts[0] != "spear_mm" or len(parts) < 2 or parts[1] not in LAYERS:
                continue
            if LAYERS.index(parts[1]) > LAYERS.index(src):
                upward.append(f"{path.relative_to(PACKAGE.parent)} imports {module}")
    assert not upward, "\n".join(upward)
