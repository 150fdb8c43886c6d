"""What a project's env.py tells Alembic at run time, read from its source without running it.

Real env.py files set `version_locations` (`context.script.version_locations = [...]`,
`config.set_main_option("version_locations", ...)`) and pass `version_table=` / `version_table_schema=`
to `context.configure`, often computed from `__file__` or from `-x` arguments
(`context.get_x_argument(as_dictionary=True)`). Running env.py would connect to whatever database its
settings name, so its source is read instead, and only expressions whose value is certain are
evaluated: string literals, names assigned once, `__file__`, `os.path` and `pathlib.Path` joins,
f-strings, lists, and `-x` arguments. Anything else is reported as unreadable, never guessed. It also says
whether env.py expects its caller to hand it a connection (`config.attributes["connection"]`), and whether
it reads a running Flask app.
"""

from __future__ import annotations

import ast
import importlib.util
import os
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

VERSION_TABLE_KEYS = ("version_table", "version_table_schema")
_OS_PATH_FUNCTIONS: dict[str, Callable[..., str]] = {
    "join": os.path.join, "dirname": os.path.dirname, "abspath": os.path.abspath,
    "realpath": os.path.realpath, "normpath": os.path.normpath,
}


class Unreadable(Exception):
    """An expression whose value rollbook cannot know without running env.py."""


class MissingXArgument(Exception):
    """env.py reads a `-x` argument that was not given and has no default."""

    def __init__(self, key: str) -> None:
        super().__init__(key)
        self.key = key


@dataclass(frozen=True)
class EnvPySetting:
    """One setting env.py makes: every value it assigns (None where unreadable), and where."""

    name: str
    values: tuple[Any, ...]

    @property
    def readable(self) -> bool:
        """True when every assignment has a known value and they all agree."""
        return bool(self.values) and Unreadable not in self.values and len(set(map(repr, self.values))) == 1

    @property
    def value(self) -> Any:
        return self.values[0]


class EnvPyReader:
    """Evaluates the few expressions of one env.py whose value is certain without running it."""

    def __init__(self, env_py: Path, x_args: Sequence[str]) -> None:
        self._env_py = env_py
        self._x_arguments = dict(_split_x_argument(argument) for argument in x_args)
        try:
            self._tree: ast.Module | None = ast.parse(env_py.read_text())
        except (OSError, SyntaxError, ValueError):
            self._tree = None
        self._assignments: dict[str, list[ast.expr]] = {}
        for node in ast.walk(self._tree) if self._tree else ():
            if isinstance(node, ast.Assign | ast.AnnAssign) and node.value is not None:
                targets = node.targets if isinstance(node, ast.Assign) else [node.target]
                for target in targets:
                    if isinstance(target, ast.Name):
                        self._assignments.setdefault(target.id, []).append(node.value)

    def version_locations(self) -> EnvPySetting:
        """`context.script.version_locations = ...` and `set_main_option("version_locations", ...)`."""
        values: list[Any] = []
        for node in self._walk():
            if isinstance(node, ast.Assign) and any(_is_attribute_chain(t, "script", "version_locations")
                                                    for t in node.targets):
                values.append(self._value_or_unreadable(node.value, _as_path_list))
            elif (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                  and node.func.attr == "set_main_option" and len(node.args) == 2
                  and isinstance(node.args[0], ast.Constant) and node.args[0].value == "version_locations"):
                values.append(self._value_or_unreadable(node.args[1], _split_locations))
        return EnvPySetting("version_locations", tuple(values))

    def configure_arguments(self) -> dict[str, EnvPySetting]:
        """The `version_table` / `version_table_schema` arguments of every `context.configure(...)` call."""
        values: dict[str, list[Any]] = {}
        for node in self._walk():
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "configure":
                for keyword in node.keywords:
                    if keyword.arg in VERSION_TABLE_KEYS:
                        values.setdefault(keyword.arg, []).append(
                            self._value_or_unreadable(keyword.value, _as_optional_text))
        return {key: EnvPySetting(key, tuple(found)) for key, found in values.items()}

    def _walk(self) -> list[ast.AST]:
        return list(ast.walk(self._tree)) if self._tree else []

    def _value_or_unreadable(self, node: ast.expr, convert: Any) -> Any:
        try:
            return convert(self._evaluate(node, depth=0))
        except Unreadable:
            return Unreadable

    def _evaluate(self, node: ast.expr, depth: int) -> Any:
        if depth > 20:
            raise Unreadable
        deeper = depth + 1
        if isinstance(node, ast.Constant) and (node.value is None or isinstance(node.value, str)):
            return node.value
        if isinstance(node, ast.Name):
            return self._name(node.id, deeper)
        if isinstance(node, ast.List | ast.Tuple):
            return [self._evaluate(item, deeper) for item in node.elts]
        if isinstance(node, ast.JoinedStr):
            return "".join(str(self._evaluate(part.value, deeper)) if isinstance(part, ast.FormattedValue)
                           else str(part.value) for part in node.values)  # type: ignore[attr-defined]
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Div):
            left = self._evaluate(node.left, deeper)
            if not isinstance(left, Path):
                raise Unreadable
            return left / _text(self._evaluate(node.right, deeper))
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
            return _text(self._evaluate(node.left, deeper)) + _text(self._evaluate(node.right, deeper))
        if isinstance(node, ast.Attribute) and node.attr == "parent":
            base = self._evaluate(node.value, deeper)
            if not isinstance(base, Path):
                raise Unreadable
            return base.parent
        if isinstance(node, ast.Subscript):
            return self._x_argument(node.value, node.slice, None, required=True, depth=deeper)
        if isinstance(node, ast.Call):
            return self._call(node, deeper)
        raise Unreadable

    def _name(self, name: str, depth: int) -> Any:
        if name == "__file__":
            return str(self._env_py)
        assigned = self._assignments.get(name, [])
        # A name assigned more than once (differently) could hold either value at the point of use.
        if not assigned or len({ast.dump(value) for value in assigned}) != 1:
            raise Unreadable
        return self._evaluate(assigned[0], depth)

    def _call(self, node: ast.Call, depth: int) -> Any:
        function = node.func
        if node.keywords and not _is_x_arguments_call(node):
            raise Unreadable
        if isinstance(function, ast.Attribute) and function.attr == "get" and 1 <= len(node.args) <= 2:
            default = node.args[1] if len(node.args) == 2 else None
            return self._x_argument(function.value, node.args[0], default, required=False, depth=depth)
        if isinstance(function, ast.Attribute) and function.attr in ("resolve", "absolute") and not node.args:
            base = self._evaluate(function.value, depth)
            if not isinstance(base, Path):
                raise Unreadable
            return base.resolve() if function.attr == "resolve" else base.absolute()
        name = _dotted(function)
        arguments = [self._evaluate(argument, depth) for argument in node.args]
        if name in ("Path", "pathlib.Path"):
            return Path(*map(_text, arguments))
        if name == "str" and len(arguments) == 1:
            return _text(arguments[0])
        if name is not None and name.startswith("os.path.") and name.removeprefix("os.path.") in _OS_PATH_FUNCTIONS:
            return _OS_PATH_FUNCTIONS[name.removeprefix("os.path.")](*map(_text, arguments))
        raise Unreadable

    def _x_argument(self, mapping: ast.expr, key_node: ast.expr, default: ast.expr | None, *, required: bool,
                    depth: int) -> Any:
        if not self._is_x_arguments(mapping, depth):
            raise Unreadable
        key = self._evaluate(key_node, depth)
        if not isinstance(key, str):
            raise Unreadable
        if key in self._x_arguments:
            return self._x_arguments[key]
        if required:
            raise MissingXArgument(key)
        return self._evaluate(default, depth) if default is not None else None

    def _is_x_arguments(self, node: ast.expr, depth: int) -> bool:
        """`context.get_x_argument(as_dictionary=True)`, or a name assigned exactly that."""
        if isinstance(node, ast.Call):
            return _is_x_arguments_call(node)
        if isinstance(node, ast.Name):
            assigned = self._assignments.get(node.id, [])
            return (depth < 20 and len(assigned) == 1 and isinstance(assigned[0], ast.expr)
                    and self._is_x_arguments(assigned[0], depth + 1))
        return False


def _is_x_arguments_call(node: ast.Call) -> bool:
    return (isinstance(node.func, ast.Attribute) and node.func.attr == "get_x_argument" and not node.args
            and any(k.arg == "as_dictionary" and isinstance(k.value, ast.Constant) and k.value.value is True
                    for k in node.keywords))


def _split_x_argument(argument: str) -> tuple[str, str]:
    # As Alembic's get_x_argument(as_dictionary=True): "key=value", or "key" with an empty value.
    key, _, value = argument.partition("=")
    return key, value


def _is_attribute_chain(node: ast.expr, owner: str, attribute: str) -> bool:
    return (isinstance(node, ast.Attribute) and node.attr == attribute and isinstance(node.value, ast.Attribute)
            and node.value.attr == owner)


def _dotted(node: ast.expr) -> str | None:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        owner = _dotted(node.value)
        return f"{owner}.{node.attr}" if owner else None
    return None


def _text(value: Any) -> str:
    if isinstance(value, str | Path):
        return str(value)
    raise Unreadable


def _as_optional_text(value: Any) -> str | None:
    return None if value is None else _text(value)


def _as_path_list(value: Any) -> tuple[str, ...]:
    if isinstance(value, list):
        return tuple(_text(item) for item in value)
    raise Unreadable


def _split_locations(value: Any) -> tuple[str, ...]:
    # set_main_option takes Alembic's one-string form; env.py files that compute it join with spaces or os.pathsep.
    text = _text(value)
    return tuple(part for part in text.replace(os.pathsep, " ").split() if part)


# env.py reads what its caller hands it (Alembic's cookbook "sharing a connection"; Dagster's raises without
# one): `NAME = config.attributes.get("connection")` or `config.attributes["connection"]`.
_HANDED_A_CONNECTION = re.compile(r"""(?:(\w+)\s*=\s*)?[\w.]*attributes(?:\.get\(|\[)\s*["']connection["']""")


def handed_connection(env_py: Path) -> Literal["connection", "engine"] | None:
    """What env.py expects its caller to hand it in `config.attributes["connection"]`, if anything.

    A Connection (the cookbook, Dagster), or an Engine where env.py calls `.connect()` on what it is handed
    (a "connectable", as the demo's env.py does).
    """
    source = _source_env_py_runs(env_py)
    handed = _HANDED_A_CONNECTION.search(source)
    if handed is None:
        return None
    if handed.group(1) and re.search(rf"\b{re.escape(handed.group(1))}\.connect\(", source):
        return "engine"
    return "connection"


_FLASK_CURRENT_APP = re.compile(r"\bfrom\s+flask\s+import\s[^\n]*\bcurrent_app\b|\bflask\.current_app\b")


def reads_flask_app(env_py: Path) -> bool:
    """Whether env.py reads the running Flask app (`current_app`), as Flask-Migrate's template does: it then
    works only inside that app's context, as under `flask db downgrade`."""
    return bool(_FLASK_CURRENT_APP.search(_source_env_py_runs(env_py)))


def _source_env_py_runs(env_py: Path) -> str:
    """env.py's source and that of the modules it imports names from: Dagster's env.py only calls
    `run_migrations_online` of its own package, which is where the connection is read."""
    source = env_py.read_text(errors="replace")
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return source
    sources = [source]
    for node in ast.walk(tree):
        if not isinstance(node, ast.ImportFrom) or node.level or not node.module \
                or node.module.split(".")[0] in ("alembic", "sqlalchemy"):
            continue
        try:
            spec = importlib.util.find_spec(node.module)
        except (ImportError, ValueError):
            continue
        if spec is not None and spec.origin and spec.origin.endswith(".py"):
            sources.append(Path(spec.origin).read_text(errors="replace"))
    return "\n".join(sources)
