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
#: Bottom to top. ``errors``, ``_io``, ``_options``, ``_device`` and ``_hub`` are the base everything may use.
LAYERS = (
    "errors",
    "_io",
    "_options",
    "_device",
    "_hub",
    "models",
    "diffusion",
    "data",
    "evaluation",
    "encoder",
    "heads",
    "formats",
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


def _imports(path: Path, *, runtime: bool = False) -> list[tuple[int, str]]:
    """``(line, module)`` of every import of the package in ``path``; ``runtime``: not those under ``if
    TYPE_CHECKING:`` (annotations only, never executed)."""
    tree = ast.parse(path.read_text())
    if runtime:
        for node in ast.walk(tree):
            if isinstance(node, ast.If) and isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING":
                node.body = []
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module == "smp_diffusion_encoder" and node.level == 0:
            names = [f"{node.module}.{a.name}" for a in node.names]  # from smp_diffusion_encoder import _options
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
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


def _module_name(path: Path) -> str:
    rel = path.relative_to(PACKAGE.parent).with_suffix("")
    parts = rel.parts[:-1] if rel.name == "__init__" else rel.parts
    return ".".join(parts)


def test_no_import_cycles() -> None:
    """No module reaches itself through the imports that run (module level or inside functions, not those for type
    annotations only; a package ``__init__`` counts as the package)."""
    paths = sorted(PACKAGE.rglob("*.py"))
    names = {_module_name(p) for p in paths}

    def target(name: str) -> str | None:
        while name and name not in names:
            name = name.rpartition(".")[0]
        return name or None

    graph = {
        _module_name(p): {t for _, n in _imports(p, runtime=True) if (t := target(n)) and t != _module_name(p)}
        for p in paths
    }
    graph["smp_diffusion_encoder"] = set()  # the root facade names everything by design
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt) :] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        stack.pop()
        state[node] = 2
        return None

    for module in sorted(graph):
        if module not in state and (cycle := visit(module)):
            raise AssertionError("import cycle: " + " -> ".join(cycle))
