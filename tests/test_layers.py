"""The package's layers point one way: a module imports only from its own layer or the layers below.

Every import counts, at module level or inside a function (a function-local import that hid a cycle would be
a back-edge all the same). The order, bottom to top, is :data:`LAYERS`; the package root is the facade and may
name anything.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "smp_diffusion_encoder"
#: Bottom to top. ``_io``, ``_options``, ``_device`` and ``errors`` are the base everything may use.
LAYERS = (
    "errors",
    "_io",
    "_options",
    "_device",
    "models",
    "diffusion",
    "data",
    "evaluation",
    "heads",
    "encoder",
    "training",
    "hub",
    "registry",
    "inference",
    "generation",
    "finetune",
    "study",
    "labeling",
    "cli",
)


def _imports(path: Path) -> list[tuple[int, str]]:
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module]
        elif isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        else:
            continue
        found += [(node.lineno, n) for n in names if n.startswith("smp_diffusion_encoder.")]
    return found


def _layer(module: str) -> str:
    return module.split(".")[1].removesuffix(".py")


MODULES = sorted(p for p in PACKAGE.rglob("*.py") if p.parent != PACKAGE or p.name != "__init__.py")


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_no_import_points_upward(path: Path) -> None:
    rel = path.relative_to(PACKAGE)
    own = rel.parts[0].removesuffix(".py")
    assert own in LAYERS, f"{rel}: add its layer to LAYERS"
    upward = [f"line {line}: {name}" for line, name in _imports(path) if LAYERS.index(_layer(name)) > LAYERS.index(own)]
    assert not upward, f"{rel} ({own}) imports from higher layers: {upward}"


def test_every_layer_exists() -> None:
    present = {p.relative_to(PACKAGE).parts[0].removesuffix(".py") for p in PACKAGE.rglob("*.py")} - {"__init__"}
    assert present == set(LAYERS)
