"""Every bundle component a config names is found where its name says: ``_target_`` and ``$bundle...`` paths
resolve the way MONAI resolves them (``pydoc.locate``), each to a function or class defined in the module of that
path, so a reader goes from any ``_target_`` to one file by its name."""

from __future__ import annotations

import ast
import json
import re
from pydoc import locate

from tests.helpers.paths import CONFIGS, REPO

PACKAGE = REPO / "bundle"
BUNDLE_PATH = re.compile(r"\bbundle(?:\.\w+)+")


def strings(value: object):
    if isinstance(value, dict):
        for key, item in value.items():
            yield key
            yield from strings(item)
    elif isinstance(value, list):
        for item in value:
            yield from strings(item)
    elif isinstance(value, str):
        yield value


def named_paths() -> dict[str, set[str]]:
    """``{config file: bundle paths it names}``, from ``_target_`` values and ``$`` expressions (not imports)."""
    found: dict[str, set[str]] = {}
    for config in sorted(CONFIGS.glob("*.json")):
        for text in strings(json.loads(config.read_text())):
            if text.startswith("$import") or text.startswith("$from"):
                continue
            for path in BUNDLE_PATH.findall(text):
                found.setdefault(config.name, set()).add(path)
    return found


def defining_module(path: str) -> str:
    """The longest prefix of ``path`` that is a module (``bundle.a.b`` of ``bundle.a.b.Class.method``)."""
    parts = path.split(".")
    while parts and not isinstance(locate(".".join(parts)), type(json)):
        parts.pop()
    return ".".join(parts)


def test_every_named_component_is_defined_in_the_module_its_path_names():
    paths = named_paths()
    assert {"train.json", "inference.json", "train_msc.json", "mask_preview.json", "classify.json"} <= set(paths)
    wrong = []
    for config, names in sorted(paths.items()):
        for path in sorted(names):
            component = locate(path)
            module = defining_module(path)
            owner = locate(".".join(path.split(".")[: len(module.split(".")) + 1]))  # the class of a classmethod
            if component is None:
                wrong.append(f"{config}: {path} does not resolve")
            elif getattr(owner, "__module__", None) != module:
                wrong.append(
                    f"{config}: {path} is defined in {getattr(owner, '__module__', '?')}, not in {module}, "
                    "the module its path names"
                )
    assert not wrong, "\n".join(wrong)


def module_imports(module: str) -> set[str]:
    """The ``bundle`` modules a module's top-level code imports (names imported from a module count as it)."""
    parts = module.split(".")
    path = PACKAGE.parent.joinpath(*parts)
    path = path / "__init__.py" if path.is_dir() else path.with_suffix(".py")
    found = set()
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names if alias.name.startswith("bundle.")}
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("bundle"):
            found.add(node.module)
            found |= {
                f"{node.module}.{alias.name}"
                for alias in node.names
                if (PACKAGE.parent / node.module.replace(".", "/") / f"{alias.name}.py").is_file()
            }
    return found


def loaded_by(modules: set[str]) -> set[str]:
    """Every module importing ``modules`` loads: their imports, transitively, and the packages above each."""
    loaded, pending = set(), list(modules)
    while pending:
        module = pending.pop()
        if module in loaded:
            continue
        loaded.add(module)
        parents = [".".join(module.split(".")[:n]) for n in range(1, module.count(".") + 1)]
        pending += parents + sorted(module_imports(module))
    return loaded


def test_a_base_config_imports_what_its_expressions_name():
    """The modules of every ``bundle.…`` path a base config names are loaded by the config's own ``imports`` (so the
    path is an attribute chain from ``bundle`` when MONAI evaluates a ``$`` expression), e.g. through the package
    ``__init__`` that imports its modules."""
    paths = named_paths()
    for config in (
        "train_msc.json",
        "train.json",
        "inference.json",
        "mask_preview.json",
        "classify.json",
        "vgmedgen_train.json",
    ):
        imported = {
            line.split()[1]
            for line in json.loads((CONFIGS / config).read_text())["imports"]
            if line.startswith("$import bundle")
        }
        loaded = loaded_by(imported)
        missing = sorted(path for path in paths[config] if defining_module(path) not in loaded)
        assert not missing, f"{config}: its imports do not load the modules of {missing}"
