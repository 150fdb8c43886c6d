"""The naming convention of the project's `target_metadata`, read without running env.py.

Alembic names what `op.create_check_constraint`, `op.f()`, `sa.CheckConstraint(name=...)` and friends
create with the naming convention of the `target_metadata` that env.py passes to `context.configure`
(`ck_%(table_name)s__%(constraint_name)s` makes "no_self_reference" into
"ck_block_document_reference__no_self_reference").
rollbook renders and replays migrations without env.py (a real env.py may migrate whatever database its
settings name), so it passes the same convention itself. Where it comes from, in order:

1. `target_metadata = "module:attribute"` in the `[project]` table of rollbook.toml (or
   `[tool.rollbook.project]` of pyproject.toml): a MetaData, a declarative base, or a naming-convention dict.
2. env.py's own `target_metadata = ...` at module level, read with Python's parser: a name or attribute
   imported from a module (`from app.models import Base` ... `Base.metadata`), which is then imported;
   or `MetaData(naming_convention=...)` written in env.py with a literal dict.

Limits: a `target_metadata` that env.py computes (a function call, a name it assigns from code) cannot be
read this way: name it in the settings. A list of MetaData gives SQLAlchemy's default convention, as it
does in Alembic's own operations.
"""

from __future__ import annotations

import ast
import importlib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import MetaData

from rollbook.errors import BadInput
from rollbook.project.migrations import MigrationProject
from rollbook.project_config import project_setting

SETTING = "target_metadata"


@dataclass(frozen=True)
class NamingConvention:
    """The convention migrations are rendered and replayed with, where it was read, or why it could not be."""

    convention: Mapping[str, Any] | None  # None: SQLAlchemy's default
    source: str
    problem: str | None = None

    def metadata(self) -> MetaData | None:
        """A MetaData carrying the convention, to pass as `target_metadata`; None for the default."""
        return MetaData(naming_convention=dict(self.convention)) if self.convention is not None else None

    @property
    def note(self) -> str:
        """One sentence for a report: which convention named the objects, or why the default was used."""
        if self.problem:
            return (f"The naming convention of target_metadata could not be read ({self.problem}); SQLAlchemy's "
                    f"default was used, so constraint names may differ. Set {SETTING} = \"module:attribute\" in "
                    "the [project] table of rollbook.toml.")
        if self.convention is None:
            return f"Names follow SQLAlchemy's default naming convention ({self.source})."
        return f"Names follow the naming convention of target_metadata ({self.source})."


def read_naming_convention(project: MigrationProject) -> NamingConvention:
    """The naming convention of the project's target_metadata.

    Raises BadInput when the settings name an object that cannot be imported; anything env.py does
    that cannot be read gives the default convention with the reason in `problem`.
    """
    configured = project_setting(project.config_path.parent, SETTING)
    if configured is not None:
        return _from_setting(configured.value, configured.where)
    env_py = Path(project.scripts.dir) / "env.py"
    try:
        return _from_env_py(env_py)
    except _Unreadable as exc:
        return NamingConvention(None, f"{env_py.name}", problem=str(exc))


class _Unreadable(Exception):
    """env.py's target_metadata could not be read without running env.py."""


def _from_setting(value: object, where: str) -> NamingConvention:
    if not isinstance(value, str) or value.count(":") != 1:
        raise BadInput(f"{where} must be \"module:attribute\" (for example \"app.models:Base.metadata\"), not "
                       f"{value!r}. Fix the setting and retry; nothing was changed.")
    module_name, attribute = value.split(":")
    try:
        found = _attribute(_import(module_name), attribute.split("."))
        convention = _convention_of(found)
    except _Unreadable as exc:
        raise BadInput(f"{where} names {value!r}, which cannot be used: {exc}. Install the project into this "
                       "environment (pip install -e .) or fix the setting; nothing was changed.") from None
    return NamingConvention(convention, f"{value}, from {where}")


def _from_env_py(env_py: Path) -> NamingConvention:
    try:
        source = env_py.read_text()
        tree = ast.parse(source)
    except (OSError, SyntaxError, ValueError) as exc:
        raise _Unreadable(f"{env_py} cannot be read: {exc}") from None
    assigned = {
        target.id: statement.value
        for statement in tree.body if isinstance(statement, ast.Assign)
        for target in statement.targets if isinstance(target, ast.Name)
    }
    value = assigned.get(SETTING)
    if value is None and SETTING in source:
        raise _Unreadable("env.py sets target_metadata inside a function or a condition, not at module level")
    if value is None:
        return NamingConvention(None, "env.py sets no target_metadata")
    if isinstance(value, ast.Constant) and value.value is None:
        return NamingConvention(None, "env.py sets target_metadata = None")
    imports = _imports(tree)
    if isinstance(value, ast.Call) and _dotted(value.func).split(".")[-1] == "MetaData":
        keyword = next((k.value for k in value.keywords if k.arg == "naming_convention"), None)
        if keyword is None:
            return NamingConvention(None, "env.py's MetaData() has no naming_convention")
        return NamingConvention(_literal_or_imported(keyword, assigned, imports), "MetaData(...) in env.py")
    dotted = _dotted(value)
    if not dotted:
        raise _Unreadable(f"env.py computes target_metadata ({ast.unparse(value)})")
    root, *rest = dotted.split(".")
    if root not in imports:
        raise _Unreadable(f"env.py sets target_metadata = {dotted}, and {root} is not imported from a module")
    module_name, attribute = imports[root]
    found = _attribute(_import(module_name), [*([attribute] if attribute else []), *rest])
    return NamingConvention(_convention_of(found), f"{dotted}, imported from {module_name}")


def _imports(tree: ast.Module) -> dict[str, tuple[str, str | None]]:
    """Names env.py imports at module level -> (module, attribute of it or None for the module itself)."""
    names: dict[str, tuple[str, str | None]] = {}
    for statement in tree.body:
        if isinstance(statement, ast.ImportFrom) and statement.module and statement.level == 0:
            for alias in statement.names:
                names[alias.asname or alias.name] = (statement.module, alias.name)
        elif isinstance(statement, ast.Import):
            for alias in statement.names:
                if alias.asname:
                    names[alias.asname] = (alias.name, None)
                else:  # `import a.b` binds `a`
                    names[alias.name.split(".")[0]] = (alias.name.split(".")[0], None)
    return names


def _literal_or_imported(node: ast.expr, assigned: dict[str, ast.expr],
                         imports: dict[str, tuple[str, str | None]]) -> Mapping[str, Any]:
    if isinstance(node, ast.Name) and node.id in assigned:
        node = assigned[node.id]
    try:
        value = ast.literal_eval(node)
    except ValueError:
        dotted = _dotted(node)
        root = dotted.split(".")[0] if dotted else ""
        if root not in imports:
            raise _Unreadable(f"env.py's naming_convention ({ast.unparse(node)}) is not a literal or an "
                              "import") from None
        module_name, attribute = imports[root]
        value = _attribute(_import(module_name), [*([attribute] if attribute else []), *dotted.split(".")[1:]])
    if not isinstance(value, Mapping):
        raise _Unreadable(f"env.py's naming_convention is a {type(value).__name__}, not a dict")
    return value


def _dotted(node: ast.expr) -> str:
    """'a.b.c' for a name or attribute chain; '' for anything else."""
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        parent = _dotted(node.value)
        return f"{parent}.{node.attr}" if parent else ""
    return ""


def _import(module_name: str) -> Any:
    try:
        return importlib.import_module(module_name)
    except Exception as exc:  # an application module may raise anything while it loads
        raise _Unreadable(f"importing {module_name} failed with {type(exc).__name__}: {exc}") from None


def _attribute(found: Any, names: list[str]) -> Any:
    for name in names:
        try:
            found = getattr(found, name)
        except AttributeError:
            raise _Unreadable(f"{getattr(found, '__name__', type(found).__name__)} has no attribute {name}") from None
    return found


def _convention_of(found: Any) -> Mapping[str, Any] | None:
    """The convention of a MetaData, a declarative base (its .metadata), or a convention dict itself."""
    if isinstance(found, MetaData):
        return found.naming_convention
    metadata = getattr(found, "metadata", None)
    if isinstance(metadata, MetaData):
        return metadata.naming_convention
    if isinstance(found, Mapping):
        return found
    if isinstance(found, (list, tuple)):
        return None  # Alembic's operations use the default convention for a list of MetaData
    raise _Unreadable(f"target_metadata is a {type(found).__name__}, not a MetaData or a declarative base")
