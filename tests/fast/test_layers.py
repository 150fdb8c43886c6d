"""The tree's arrows point one way: a module imports only from its own folder or the folders below it."""

from __future__ import annotations

import ast
from pathlib import Path

import rollbook

PACKAGE = Path(rollbook.__file__).parent
# Lowest first. Modules at the top of the package are the shared vocabulary (errors, outcomes, ...) or the
# entry points (cli, pytest_plugin); every folder is a stage of the work.
LAYERS = ("redaction", "pg", "records", "project", "planning", "policy", "execution", "recovery", "runs",
          "website", "demo")
ENTRY_POINTS = {"cli", "pytest_plugin", "__main__"}


def _rank(module: str) -> int:
    parts = module.split(".")[1:]
    if not parts:
        return -1
    if parts[0] in LAYERS:
        return LAYERS.index(parts[0])
    return len(LAYERS) if parts[0] in ENTRY_POINTS else -1


def _imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("rollbook"):
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names if node.module == "rollbook")
        elif isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names if alias.name.startswith("rollbook"))
    return names


def _module_name(path: Path) -> str:
    relative = path.relative_to(PACKAGE.parent).with_suffix("")
    return ".".join(part for part in relative.parts if part != "__init__")


def test_no_module_imports_from_a_higher_folder() -> None:
    upward = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if "project" in path.relative_to(PACKAGE).parts[:1] and path.parent.name == "versions":
            continue
        module = _module_name(path)
        for imported in _imports(path):
            if _rank(imported) > _rank(module):
                upward.append(f"{module} imports {imported}")
    assert upward == []


def test_every_folder_is_a_known_layer() -> None:
    folders = {p.name for p in PACKAGE.iterdir() if (p / "__init__.py").exists()}
    assert folders == set(LAYERS)
