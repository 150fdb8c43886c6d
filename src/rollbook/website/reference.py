"""Reference tables generated from the program itself, so the site cannot drift from it: the command line,
the run record's fields and the policy defaults."""

from __future__ import annotations

import json
from collections.abc import Iterator
from importlib.metadata import entry_points

import click

from rollbook import markdown
from rollbook.policy.rules import default_policy
from rollbook.records.model import record_fields


def cli_reference() -> str:
    """Every rollbook command's --help, generated from the program itself."""
    # The command as installed (the `rollbook` console script): the site documents what its readers run, and the
    # site's modules stay below the command line in the package's layers.
    main = next(iter(entry_points(group="console_scripts", name="rollbook"))).load()
    assert isinstance(main, click.Command)
    parts = []
    for path, command, context in _commands(main, click.Context(main, info_name="rollbook", max_content_width=100)):
        parts.append(f"### `{' '.join(path)}`\n\n```text\n{command.get_help(context)}\n```")
    return "\n\n".join(parts)


def _commands(command: click.Command, context: click.Context,
              path: tuple[str, ...] = ("rollbook",)) -> Iterator[tuple[tuple[str, ...], click.Command, click.Context]]:
    yield path, command, context
    if isinstance(command, click.Group):
        for name in sorted(command.list_commands(context)):
            child = command.get_command(context, name)
            if child is not None and not child.hidden:
                yield from _commands(child, click.Context(child, info_name=name, parent=context), (*path, name))


def record_fields_table() -> str:
    """Every top-level field of the run record with its JSON type and meaning, from the model."""
    rows = [(markdown.code(name), markdown.cell(kind), markdown.cell(meaning))
            for name, kind, meaning in record_fields()]
    return markdown.table(["field", "type", "meaning"], rows)


def policy_defaults() -> str:
    """The policy rules of each environment as rollbook applies them when no file changes them."""
    environments = default_policy().environments
    keys = list(next(iter(environments.values())).to_dict())
    # Written as a rollbook.toml would say it: TOML has no null, and `false` switches the window off.
    values = {name: {k: False if v is None else v for k, v in rules.to_dict().items()}
              for name, rules in environments.items()}
    rows = [(markdown.code(key), *(markdown.code(json.dumps(values[name][key])) for name in environments))
            for key in keys]
    return markdown.table(["key", *environments], rows)

