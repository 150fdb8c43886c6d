"""The `rollbook` command: each subcommand parses its arguments and calls one library function."""

from __future__ import annotations

import contextlib
import json
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from functools import wraps
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from rollbook.errors import BadInput, RollbookError
from rollbook.records.archive import Archive, default_root
from rollbook.records.run_listing import RunFilter, list_runs, runs_json, runs_table, why_no_rows
from rollbook.records.run_summary import find_run
from rollbook.s3_support import require_s3_support

# Commands that read the database, a project or the demo import what they need when they run: SQLAlchemy,
# Alembic and MkDocs take seconds to import, which `archive list` and `--help` should not pay.
if TYPE_CHECKING:
    from rollbook.planning.data_loss import CountProgress
    from rollbook.project.migrations import MigrationProject
    from rollbook.records.model import RecordedStep

database_option = click.option(
    "--database-url", envvar="DATABASE_URL", show_envvar=True,
    help="Database to inspect: a URL or libpq keyword string; put the password in PGPASSWORD or ~/.pgpass, not in it.",
)
config_option = click.option(
    "-c", "--config", "config_path", envvar="ALEMBIC_CONFIG", show_envvar=True, default="alembic.ini",
    show_default=True, help="The Alembic project's alembic.ini.",
)
name_option = click.option(
    "-n", "--name", "ini_section", default="alembic", show_default=True,
    help="The section of alembic.ini to read, as `alembic -n` names it.",
)


def _duration_ms(ctx: click.Context, param: click.Parameter, value: str | int) -> int:
    """A duration as the runbooks take it (500ms, 5s, 2min, 1h, or a bare number of milliseconds), in ms."""
    from rollbook.runs.parameters import parse_duration_ms

    try:
        return parse_duration_ms(param.opts[0], value)
    except RollbookError as exc:
        raise click.BadParameter(str(exc), ctx=ctx, param=param) from None

x_arg_option = click.option(
    "-x", "--x-arg", "x_args", multiple=True, metavar="KEY=VALUE",
    help="An argument for env.py's context.get_x_argument(), as `alembic -x` passes it (repeatable).",
)


def _duration_seconds(ctx: click.Context, param: click.Parameter, value: str | int) -> int:
    """A duration in whole seconds: 30s, 10min, 1h, or a bare number of seconds (papermill's unit)."""
    from rollbook.runs.parameters import parse_duration_ms

    text = str(value).strip()
    if text.isdigit():
        return int(text)
    try:
        return max(1, round(parse_duration_ms(param.opts[0], text) / 1000))
    except RollbookError:
        raise click.BadParameter(f"{param.opts[0]} must be a duration such as 30s, 10min or 1h (a bare number is "
                                 f"seconds), not {text!r}.", ctx=ctx, param=param) from None


def _project_output_to_stderr() -> contextlib.AbstractContextManager[Any]:
    """While the project's migrations load and render, its prints and stdout logging go to stderr.

    stdout then carries only what rollbook prints (JSON, SQL), which a pipe, `jq` or psql reads whole.
    """
    return contextlib.redirect_stdout(sys.stderr)


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


def prints_archive_head(func: Callable[..., Any]) -> Callable[..., Any]:
    """After a command that files records, print `archive head: HASH` as the last line on stderr.

    Printed when the command filed something (the head moved) or succeeded, whatever it printed before
    (an error message included), so the head can be kept outside the archive: in the ticket, a chat
    message, a CI log. Put it above `reports_errors`, so that the head comes after any error message.
    """

    @wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        archive = Archive(default_root())  # reading the head needs no signing settings
        before = _head_or_none(archive)
        succeeded = False
        try:
            result = func(*args, **kwargs)
            succeeded = True
            return result
        except SystemExit as stop:
            succeeded = stop.code in (None, 0)
            raise
        finally:
            after = _head_or_none(archive)
            if after is not None and (after != before or succeeded):
                click.echo(f"archive head: {after}", err=True)

    return wrapper


def _head_or_none(archive: Archive) -> str | None:
    try:
        return archive.head()
    except RollbookError:
        return None  # an unreadable archive: the command itself says so


def _show_step(step: RecordedStep) -> None:
    """Progress of a runbook run on stderr: each step as it starts and as it ends."""
    if step.status == "running":
        click.echo(f"  {step.step} ...", err=True)
    else:
        click.echo(f"  {step.step}: {step.status} ({step.seconds or 0:.2f} s)", err=True)


class _CountProgressShown:
    """A big table's exact count on stderr: the statistics' estimate before it, the elapsed time while it runs
    (every second, on a terminal) and how it ended."""

    def __init__(self) -> None:
        self._stop = threading.Event()
        self._ticker: threading.Thread | None = None

    def __call__(self, progress: CountProgress) -> None:
        if progress.seconds is None:
            rows = progress.estimate.rows
            about = f"about {rows} rows" if rows is not None else "no estimate"
            click.echo(f"Counting {progress.table} ({progress.heap_bytes / 2**20:.0f} MB) exactly; the statistics "
                       f"say {about} ({progress.estimate.basis}) ...", err=True)
            if sys.stderr.isatty():
                self._stop.clear()
                self._ticker = threading.Thread(target=self._tick, daemon=True)
                self._ticker.start()
            return
        if self._ticker is not None:
            self._stop.set()
            self._ticker.join()
            self._ticker = None
            click.echo("\r\033[K", nl=False, err=True)
        ended = "counted" if progress.counted else "not counted (the plan keeps the estimate)"
        click.echo(f"  {progress.table}: {ended} after {progress.seconds:.1f} s", err=True)

    def _tick(self) -> None:
        started = time.monotonic()
        while not self._stop.wait(1.0):
            click.echo(f"\r  {time.monotonic() - started:.0f} s elapsed", nl=False, err=True)


@click.group()
@click.version_option(package_name="rollbook")
def main() -> None:
    """Safe, explainable and auditable rollback of Alembic migrations on PostgreSQL."""


@main.command()
@click.argument("directory", default=".", type=click.Path(file_okay=False, path_type=Path))
def init(directory: Path) -> None:
    """Write the team's rollbook.toml, mkdocs.yml and procedure pages into DIRECTORY (default: here).

    As `alembic init` and `mkdocs new`: the pages are the team's to edit, and running it again writes only
    what is missing, never over a file that is there. Then `mkdocs build --strict` there (pip install
    'rollbook[site]') builds the team's procedures site with every runbook and the archive.
    """
    from rollbook.website.team_site import init_site

    result = init_site(directory)
    for name in result.written:
        click.echo(f"wrote    {directory / name}")
    for name in result.unchanged:
        click.echo(f"kept     {directory / name} (already as rollbook writes it)")
    for name in result.skipped:
        click.echo(f"skipped  {directory / name} (it is there and differs: yours, not overwritten)")
    into = "" if directory == Path(".") else f"cd {directory} && "
    click.echo(f"Next, with the [site] extra (pip install 'rollbook[site]'): {into}mkdocs build --strict")


@main.command()
@database_option
@config_option
@name_option
@x_arg_option
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@reports_errors
def status(database_url: str | None, config_path: str, ini_section: str, x_args: tuple[str, ...],
           as_json: bool) -> None:
    """Current revision, heads, pending revisions and missing migration files."""
    from rollbook.pg.database import DatabaseTarget
    from rollbook.project.status import look_at_status

    with _project_output_to_stderr():
        result = look_at_status(DatabaseTarget.from_url(database_url), _project(config_path, ini_section, x_args))
    click.echo(json.dumps(result.to_dict(), indent=2) if as_json else result.to_text())
    sys.exit(result.exit_code)


@main.command(context_settings={"ignore_unknown_options": True})
@click.argument("revision", required=False)
@database_option
@config_option
@name_option
@x_arg_option
@click.option("--target", "-t", help="Where to go: -N steps, a revision id or unique prefix, or 'base' (default -1); "
              "the same as the REVISION argument.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@click.option("--sql", "as_sql", is_flag=True, help="Print the downgrade's SQL instead of the plan.")
@click.option("--no-live-checks", is_flag=True, help="Do not count rows in the database.")
@click.option("--statement-timeout", callback=_duration_ms, default="30s", show_default=True, metavar="DURATION",
              help="How long one live count may run (500ms, 5s, 2min, 1h; a bare number is milliseconds).")
@click.option("--exit-code", "verdict_exit_code", is_flag=True,
              help="Exit with the verdict, for CI: 0 safe, 5 loses data, 6 review by hand, 7 do not downgrade.")
@reports_errors
def plan(revision: str | None, database_url: str | None, config_path: str, ini_section: str,
         x_args: tuple[str, ...], target: str | None, as_json: bool, as_sql: bool, no_live_checks: bool,
         statement_timeout: int, verdict_exit_code: bool) -> None:
    """Plan a downgrade to REVISION (as `alembic downgrade REVISION`: -1, a revision id, base).

    Prints the path, operations, risk, rows each step would destroy, and a verdict.
    """
    from rollbook.pg.database import DatabaseTarget
    from rollbook.planning.plan import plan_downgrade

    with _project_output_to_stderr():
        result = plan_downgrade(DatabaseTarget.from_url(database_url), _project(config_path, ini_section, x_args),
                                _plan_target(revision, target), live_checks=not no_live_checks,
                                statement_timeout_ms=statement_timeout, progress=_CountProgressShown())
        output = result.downgrade_sql() if as_sql else None
    if output is not None:
        click.echo(output, nl=False)
    elif as_json:
        click.echo(json.dumps(result.to_dict(), indent=2))
    else:
        click.echo(result.to_text())
    if verdict_exit_code:
        sys.exit(result.exit_code)


def _plan_target(revision: str | None, target: str | None) -> str:
    """The one target named by the REVISION argument or --target, as `alembic downgrade` takes it."""
    # Unknown options reach REVISION (so that `plan -1` works as `alembic downgrade -1` does): refuse them.
    if revision is not None and revision.startswith("-") and not revision[1:].isdigit():
        raise click.NoSuchOption(revision.split("=", 1)[0])
    if revision is not None and target is not None and revision != target:
        raise click.UsageError(f"Two targets given: REVISION {revision} and --target {target}. Give one.")
    return revision or target or "-1"


@main.command("test-rollback")
@click.option("--database-url", envvar="DATABASE_URL", show_envvar=True,
              help="A database on the server to test on: scratch databases are made next to it; it is not changed.")
@config_option
@name_option
@x_arg_option
@click.option("--rows-per-table", default=3, show_default=True, help="Rows seeded into every table before a downgrade.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@reports_errors
def rollback_test(database_url: str | None, config_path: str, ini_section: str, x_args: tuple[str, ...],
                  rows_per_table: int, as_json: bool) -> None:
    """Roll back every migration on scratch databases: the team's test, then each revision's round trip.

    Each downgrade must bring back the schema of the revision before, lose rows only where its plan
    says, and re-upgrade cleanly. Exits 0 when all pass, 1 when one fails (the differences are named),
    2 for a history with several heads or a branch point.
    """
    from rollbook.pg.database import DatabaseTarget
    from rollbook.recovery.rehearsal import rehearse_rollbacks

    with _project_output_to_stderr():
        report = rehearse_rollbacks(DatabaseTarget.from_url(database_url), _project(config_path, ini_section, x_args),
                                    rows_per_table=rows_per_table)
    click.echo(json.dumps(report.to_dict(), indent=2) if as_json else report.to_text())
    sys.exit(0 if report.passed else 1)


@main.command()
@click.argument("runbook")
@click.argument("output_path", required=False, metavar="[OUTPUT]")
@click.option("-p", "--parameter", "typed", nargs=2, multiple=True, metavar="NAME VALUE",
              help="A parameter, its type guessed as papermill's -p does (True/False, numbers).")
@click.option("-r", "--raw", "raw", nargs=2, multiple=True, metavar="NAME VALUE",
              help="A parameter kept as text: use it for revision ids.")
@click.option("-f", "--parameters_file", "parameters_file", type=click.Path(dir_okay=False),
              help="Parameters from a YAML file, as papermill's -f reads them (-y, -p and -r override them).")
@click.option("-y", "--parameters_yaml", "parameters_yaml", metavar="YAML",
              help="Parameters as YAML text, as papermill's -y reads them (-p and -r override them).")
@click.option("-x", "--x-arg", "x_args", multiple=True, metavar="KEY=VALUE",
              help="An argument for env.py's context.get_x_argument() (repeatable; sets alembic_x_args).")
@click.option("--execute", is_flag=True, help="Really roll back (sets the runbook's execute parameter).")
@click.option("--output", "-o", help="Also write the record to this path or s3:// URL (or give it as OUTPUT).")
@click.option("--execution-timeout", "--cell-timeout", "cell_timeout", default="1h", show_default=True,
              callback=_duration_seconds, metavar="DURATION",
              help="How long one cell may run before it is interrupted (30s, 10min, 1h; a bare number is seconds, "
                   "as in papermill).")
@click.option("--timeout", "run_timeout", default="4h", show_default=True, metavar="DURATION",
              callback=_duration_seconds,
              help="How long the whole run may take before papermill and its kernel are killed (a bare number is "
                   "seconds).")
@click.option("--log-output", is_flag=True,
              help="Stream the notebook's cell outputs to stderr while it runs, as papermill's --log-output does.")
@prints_archive_head
@reports_errors
def run(runbook: str, output_path: str | None, typed: tuple[tuple[str, str], ...], raw: tuple[tuple[str, str], ...],
        parameters_file: str | None, parameters_yaml: str | None, x_args: tuple[str, ...], execute: bool,
        output: str | None, cell_timeout: int, run_timeout: int, log_output: bool) -> None:
    """Run RUNBOOK with papermill and archive its record; also write the executed notebook to OUTPUT.

    RUNBOOK is a bundled runbook (rollback, status, plan, backup, restore, restore-lost-data, rollback-test) or a
    notebook's path.
    Parameters are given as papermill takes them: -f FILE, -y YAML, -p NAME VALUE, -r NAME VALUE.

    A password in database_url is moved to the kernel's environment, never into the notebook. Exits
    0 when the run succeeded, 4 when it was refused, 1 when it failed, timed out or its kernel died.
    The last line on stderr is the archive's new head (`archive head: HASH`): keep it outside the archive.
    """
    from rollbook.project.migrations import parse_x_args
    from rollbook.runs.runner import run_runbook

    if output and output_path and output != output_path:
        raise click.UsageError(f"Two outputs given: OUTPUT {output_path} and --output {output}. Give one.")
    output = output or output_path
    if output:
        require_s3_support(output, "--output")
    parameters = _yaml_parameters(parameters_file, "-f") | _yaml_parameters(parameters_yaml, "-y")
    parameters.update({name: papermill_value(value) for name, value in typed})
    parameters.update(raw)  # -r wins over -p, as text
    if x_args:
        parameters["alembic_x_args"] = list(parse_x_args(list(x_args), "--x-arg"))
    if execute:
        parameters["execute"] = True
    result = run_runbook(runbook, parameters, archive=Archive.default(), output=output,
                         cell_timeout_seconds=cell_timeout, run_timeout_seconds=run_timeout,
                         on_step=_show_step, log_output=log_output)
    click.echo(result.report())
    sys.exit(result.exit_code)


def _yaml_parameters(source: str | None, option: str) -> dict[str, object]:
    """Parameters from a YAML file (-f) or text (-y), as papermill reads them: a mapping of names to values."""
    if source is None:
        return {}
    import yaml

    where = f"{option} {source}" if option == "-f" else option
    try:
        text = Path(source).read_text(encoding="utf-8") if option == "-f" else source
        values = yaml.safe_load(text)
    except OSError as exc:
        raise BadInput(f"Cannot read the parameters file {source} ({exc.strerror}). Nothing was started.") from None
    except yaml.YAMLError as exc:
        raise BadInput(f"The parameters of {where} are not YAML: {str(exc).splitlines()[0]}. Nothing was "
                       "started.") from None
    if values is None:
        return {}
    if not isinstance(values, dict) or not all(isinstance(name, str) for name in values):
        raise BadInput(f"The parameters of {where} must be a YAML mapping of names to values (operator: alice). "
                       "Nothing was started.")
    return dict(values)


def papermill_value(text: str) -> bool | int | float | str | None:
    """A `-p` value typed as papermill's own `-p` types it: True, False, None, an int, a float, else text.

    Anything int() or float() accepts counts ("1_000", " 7 ", "nan", "-1e3"), as in papermill; `-r` keeps text.
    """
    constants: dict[str, bool | None] = {"True": True, "False": False, "None": None}
    if text in constants:
        return constants[text]
    for number in (int, float):
        try:
            return number(text)
        except ValueError:
            pass
    return text


def _project(config_path: str, ini_section: str, x_args: tuple[str, ...]) -> MigrationProject:
    from rollbook.project.migrations import load_project, parse_x_args

    return load_project(config_path, parse_x_args(list(x_args), "--x-arg"), ini_section)


@main.group()
def archive() -> None:
    """The archive of run records (ROLLBOOK_ARCHIVE, default ./rollback-records)."""


@archive.command("list")
@click.option("--environment", help="Only runs in this policy environment (production, staging, ...).")
@click.option("--runbook", help="Only runs of this runbook (rollback, backup, restore, ...).")
@click.option("--outcome", help="Only runs that ended so (succeeded, refused, failed, dry_run, ...).")
@click.option("--limit", type=click.IntRange(min=1), metavar="N",
              help="Only the newest N runs (still listed oldest first).")
@click.option("--json", "as_json", is_flag=True,
              help="Print the rows as one JSON array of objects (the columns, and each run's record files).")
@reports_errors
def archive_list(environment: str | None, runbook: str | None, outcome: str | None, limit: int | None,
                 as_json: bool) -> None:
    """One row per run, oldest first: run id, start, database, environment, runbook, mode, target, outcome.

    Read from the manifest alone (no notebook is opened), so it stays fast on a large archive. With
    --json, an empty list is `[]`, and the reason it is empty goes to stderr.
    """
    archive = Archive.default()
    rows = list_runs(archive, RunFilter(environment=environment, runbook=runbook, outcome=outcome, limit=limit))
    if not as_json:
        click.echo(runs_table(archive, rows))
        return
    click.echo(runs_json(rows))
    nothing = why_no_rows(archive, rows)
    if nothing is not None:
        click.echo(nothing, err=True)


@archive.command("show")
@click.argument("ref")
@click.option("--json", "as_json", is_flag=True, help="Print the raw run record (JSON) instead of its summary.")
@reports_errors
def archive_show(ref: str, as_json: bool) -> None:
    """One run's summary: outcome, mode, target, revisions, backup, checks, refusal, where its records are.

    REF is a run id or a unique prefix of one, a record's file name (with or without its folder), or a
    manifest number.
    """
    found = find_run(Archive.default(), ref)
    click.echo(json.dumps(found.to_json(), indent=2, ensure_ascii=False) if as_json else found.to_text())


@archive.command("verify")
@click.option("--head", "head", metavar="HASH",
              help="A head printed by an earlier filing (`archive head: HASH`): fail unless it is an entry of the "
                   "chain.")
@reports_errors
def archive_verify(head: str | None) -> None:
    """Check the archive: hash chain, every record's sha256, signatures, and a head kept elsewhere.

    Fails (exit 1), naming the cause, on a missing or empty archive, a record or entry changed, deleted,
    reordered or inserted, an unsigned or wrongly signed entry (when an allowed signers file is set), and
    a --head that is not an entry of the chain (the archive truncated, re-chained or replaced). Without
    an allowed signers file, signatures are reported as not checked.
    """
    result = Archive.default().verify(head)
    click.echo(result.to_text())
    sys.exit(0 if result.ok else 1)


@archive.command("head")
@reports_errors
def archive_head() -> None:
    """Print the archive's head: the hash of its newest manifest entry, to keep outside the archive."""
    head = Archive(default_root()).head()
    if head is None:
        click.echo(f"rollbook: no record is filed in {default_root()}, so it has no head. Check ROLLBOOK_ARCHIVE.",
                   err=True)
        sys.exit(1)
    click.echo(head)


@archive.command("add")
@click.argument("notebook")
@prints_archive_head
@reports_errors
def archive_add(notebook: str) -> None:
    """File a notebook executed by plain papermill: reconciled, scrubbed, chained, matched to its summary.

    Only a run that a runbook of this archive started (its in-progress summary is there, or it is filed
    already) is filed; anything else is refused with exit 2.
    """
    from rollbook.runs.runner import archive_executed_notebook

    require_s3_support(notebook, "NOTEBOOK")
    result = archive_executed_notebook(notebook, Archive.default())
    click.echo(result.report())


@main.group(invoke_without_command=True)
@click.pass_context
@reports_errors
def demo(ctx: click.Context) -> None:
    """Try rollbook on the bundled demo project, on an embedded PostgreSQL server.

    With no subcommand: a guided tour that starts a throwaway server, installs the demo at head with
    sample data, and runs the rollback runbook twice: a production rollback the policy refuses, then an
    executed staging rollback that backs up, rolls back one step and verifies. Both records go to the
    archive; the server and the backups are deleted afterwards.
    """
    if ctx.invoked_subcommand is None:
        _demo_tour()


@prints_archive_head
@reports_errors
def _demo_tour() -> None:
    """The guided tour; a function of its own so that only it (not `demo up`) ends with the archive head."""
    from rollbook.demo.tour import demo_tour

    with tempfile.TemporaryDirectory(prefix="rollbook-tour-") as work_dir:
        tour = demo_tour(Path(work_dir), Archive.default(), on_step=_show_step)
    click.echo(tour.to_text())
    sys.exit(tour.exit_code)


@demo.command("up")
@reports_errors
def demo_up_command() -> None:
    """Start a demo server and database of this shell's own: eval "$(rollbook demo up)".

    Prints export lines (DATABASE_URL, ALEMBIC_CONFIG, ROLLBOOK_DEMO_DIR). Each call starts a new server
    in a fresh folder, so demos in two shells never touch each other; with ROLLBOOK_DEMO_DIR set, that
    folder is used, and a server already running there is refused, never replaced.
    """
    from rollbook.demo.server import demo_up

    environment = demo_up()
    click.echo(f"rollbook: demo server in {environment.server_dir}; stop it with `rollbook demo down` in this "
               "shell.", err=True)
    click.echo(environment.shell_exports(), nl=False)


@demo.command("down")
@reports_errors
def demo_down_command() -> None:
    """Stop the demo server ROLLBOOK_DEMO_DIR names (demo up exports it) and delete its data."""
    from rollbook.demo.server import demo_down

    click.echo(demo_down().message())
