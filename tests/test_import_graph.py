"""The package's import graph flows one way: the model's runtime never imports tooling or experiments, and each
runtime layer imports only itself and the layers below it (utils -> data -> transforms -> networks ->
losses/metrics -> engines/inferers -> handlers -> io -> serving)."""

from __future__ import annotations

import ast
from pathlib import Path

from tests.helpers.paths import REPO

PACKAGE = REPO / "bundle"

# runtime layers, lowest first; a module may import modules of its own layer or of a lower one
LAYERS = (
    ("bundle", "bundle.errors", "bundle.utils", "bundle.weights", "bundle.weights.layouts"),
    ("bundle.data",),
    ("bundle.transforms",),
    ("bundle.networks",),
    ("bundle.losses", "bundle.metrics"),
    ("bundle.engines", "bundle.inferers"),
    ("bundle.handlers",),
    ("bundle.io",),
    ("bundle.serving",),
)
TOOLING = (
    "bundle.weights.checker",
    "bundle.weights.conversion",
    "bundle.demo",
    "bundle.preparation",
    "bundle.balancing",
    "bundle.experiments",
)


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def within(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


def layer_of(name: str) -> int | None:
    """The runtime layer of a module (the most specific prefix that names it), or None for tooling."""
    if any(within(name, tool) for tool in TOOLING):
        return None
    matches = [
        (len(prefix), rank)
        for rank, prefixes in enumerate(LAYERS)
        for prefix in prefixes
        if within(name, prefix) and (prefix != "bundle" or name == "bundle")
    ]
    assert matches, f"{name}: not in a runtime layer nor in the tooling; add it to LAYERS or TOOLING"
    return max(matches)[1]


def runtime_imports(path: Path) -> list[tuple[int, str]]:
    """``(line, module)`` of every ``bundle`` import, outside ``if TYPE_CHECKING:`` blocks (annotations only)."""
    tree = ast.parse(path.read_text(), str(path))
    skipped = {
        id(node)
        for block in ast.walk(tree)
        if isinstance(block, ast.If) and "TYPE_CHECKING" in ast.unparse(block.test)
        for stmt in block.body
        for node in ast.walk(stmt)
    }
    found = []
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names if within(alias.name, "bundle")]
        elif isinstance(node, ast.ImportFrom) and node.module and within(node.module, "bundle"):
            found += [
                (node.lineno, f"{node.module}.{alias.name}" if node.module != "bundle" else f"bundle.{alias.name}")
                for alias in node.names
            ]
    return found


def resolve(imported: str) -> str:
    """The module an imported name lives in: ``bundle.a.b.name`` -> ``bundle.a.b`` when ``name`` is not a module."""
    parts = imported.split(".")
    while len(parts) > 1 and not (
        (PACKAGE.parent.joinpath(*parts).with_suffix(".py")).is_file()
        or PACKAGE.parent.joinpath(*parts, "__init__.py").is_file()
    ):
        parts.pop()
    return ".".join(parts)


SOURCES = sorted(PACKAGE.rglob("*.py"))


def test_every_module_has_a_place():
    assert len(SOURCES) > 60
    for path in SOURCES:
        layer_of(module_name(path))


def test_runtime_modules_import_only_their_layer_and_below():
    wrong = []
    for path in SOURCES:
        importer = module_name(path)
        rank = layer_of(importer)
        if rank is None:
            continue  # tooling may use the runtime
        for line, imported in runtime_imports(path):
            target = resolve(imported)
            target_rank = layer_of(target)
            if target_rank is None:
                wrong.append(f"{importer}:{line} imports {target}, which is tooling")
            elif target_rank > rank:
                wrong.append(f"{importer}:{line} ({LAYERS[rank][0]} layer) imports {target}, a higher layer")
    assert not wrong, "\n".join(wrong)
