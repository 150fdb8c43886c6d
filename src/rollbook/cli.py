"""The `rollbook` command: each subcommand parses its arguments and calls one library function."""

from __future__ import annotations

import json
import sys
import tempfile
from collections.abc import Callable
from functools import wraps
from pathlib import Path
from typing import Any

import click

from rollbook.database import DatabaseTarget
from rollbook.demo import demo_down, demo_tour, demo_up
from rollbook.errors import RollbookError
from rollbook.migrations import load_project
from rollbook.plan import plan_downgrade
from rollbook.status import read_status

database_option = click.option(
    "--database-url", envvar="DATABASE_URL", show_envvar=True,
    help="Database to inspect; put the password in PGPASSWORD or ~/.pgpass rather than the URL.",
)
config_option = click.option(
    "--config", "config_path", envvar="ALEMBIC_CONFIG", show_envvar=True, default="alembic.ini",
    show_default=True, help="The Alembic project's alembic.ini.",
)


def reports_errors(func: Callable[..., Any]) -> Callable[..., Any]:
    """Print an expected failure as one paragraph on stderr and exit with its code, no traceback."""

    @wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except RollbookError as exc:
            click.echo(f"rollbook: {exc}", err=True)
            sys.exit(exc.exit_code)

    return wrapper


@click.group()
@click.version_option(package_name="rollbook")
def main() -> None:
    """Safe, explainable and auditable rollback of Alembic migrations on PostgreSQL."""


@main.command()
@database_option
@config_option
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@reports_errors
def status(database_url: str | None, config_path: str, as_json: bool) -> None:
    """Current revision, heads, pending revisions and missing migration files."""
    result = read_status(DatabaseTarget.from_url(database_url), load_project(config_path))
    click.echo(json.dumps(result.to_dict(), indent=2) if as_json else result.to_text())


@main.command()
@database_option
@config_option
@click.option("--target", "-t", default="-1", show_default=True,
              help="Where to go: -N steps, a revision id or unique prefix, or 'base'.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@click.option("--sql", "as_sql", is_flag=True, help="Print the downgrade's SQL instead of the plan.")
@click.option("--no-live-checks", is_flag=True, help="Do not count rows in the database.")
@click.option("--statement-timeout", default=30_000, show_default=True, help="Per-table limit of a live count, ms.")
@reports_errors
def plan(database_url: str | None, config_path: str, target: str, as_json: bool, as_sql: bool,
         no_live_checks: bool, statement_timeout: int) -> None:
    """Plan a downgrade: path, operations, risk, rows each step would destroy, and a verdict."""
    result = plan_downgrade(DatabaseTarget.from_url(database_url), load_project(config_path), target,
                            live_checks=not no_live_checks, statement_timeout_ms=statement_timeout)
    if as_sql:
        click.echo(result.downgrade_sql(), nl=False)
    elif as_json:
        click.echo(json.dumps(result.to_dict(), indent=2))
    else:
        click.echo(result.to_text())


@main.group(invoke_without_command=True)
@click.pass_context
@reports_errors
def demo(ctx: click.Context) -> None:
    """Try rollbook on the bundled demo project, on an embedded PostgreSQL server.

    With no subcommand: a guided tour that starts a throwaway server, installs the demo at head with
    sample data, shows its status and plans two rollbacks, then stops the server.
    """
    if ctx.invoked_subcommand is None:
        with tempfile.TemporaryDirectory(prefix="rollbook-tour-") as work_dir:
            click.echo(demo_tour(Path(work_dir)).to_text())


@demo.command("up")
@reports_errors
def demo_up_command() -> None:
    """Start the demo server and database; prints export lines for a shell: eval "$(rollbook demo up)"."""
    click.echo(demo_up().shell_exports(), nl=False)


@demo.command("down")
@reports_errors
def demo_down_command() -> None:
    """Stop the demo server started by `rollbook demo up` and delete its data."""
    demo_down()
