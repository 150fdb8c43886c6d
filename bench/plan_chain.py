"""Benchmark: plan a 300-revision downgrade to base vs Alembic's own offline rendering of it.

Generates an Alembic project with a linear chain of revisions (create/drop table, add/drop column,
alter column type and nullability, create index, UPDATE data migrations), migrates a database on an
embedded PostgreSQL server to head with a little data in every table, then times, each as a fresh
subprocess:

- `alembic -c alembic.ini downgrade head:base --sql`                (offline, no database)
- `rollbook plan --target base --json`                               (live checks on, the default)
- `rollbook plan --target base --json --no-live-checks`

Bar: rollbook with live checks takes at most 2x the time of Alembic's offline rendering.

Run from the repository root: /work/venv/bin/python bench/plan_chain.py [--revisions N] [--runs N]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import textwrap
import time
from dataclasses import dataclass
from pathlib import Path

import alembic
import psycopg
from alembic import command
from alembic.config import Config
from bench_support import embedded_database, machine, summarize
from sqlalchemy import create_engine, pool

BAR = 2.0
DATABASE = "bench_chain"
OPS_PER_GROUP = 10
BIN_DIR = Path(sys.executable).parent
RESULTS = Path(__file__).resolve().parent / "results" / "plan_chain.json"

ALEMBIC_INI = """\
[alembic]
script_location = %(here)s
path_separator = os
# Offline rendering needs only the dialect: a plain URL with no reachable server is enough.
sqlalchemy.url = postgresql://bench@localhost/bench

[loggers]
keys = root

[handlers]
keys = console

[formatters]
keys = generic

[logger_root]
level = WARNING
handlers = console

[handler_console]
class = StreamHandler
args = (sys.stderr,)
level = NOTSET
formatter = generic

[formatter_generic]
format = %(levelname)-5.5s [%(name)s] %(message)s
"""

ENV_PY = '''\
"""Offline: the URL from alembic.ini. Online: the connection passed in config.attributes."""

from alembic import context

config = context.config

if context.is_offline_mode():
    context.configure(url=config.get_main_option("sqlalchemy.url"), literal_binds=True,
                      transaction_per_migration=True)
    with context.begin_transaction():
        context.run_migrations()
else:
    context.configure(connection=config.attributes["connection"], transaction_per_migration=True)
    with context.begin_transaction():
        context.run_migrations()
'''

REVISION_TEMPLATE = '''\
"""{message}

Revision ID: {revision}
Revises: {down_revision}
"""

import sqlalchemy as sa
from alembic import op

revision = "{revision}"
down_revision = {down_literal}
branch_labels = None
depends_on = None


def upgrade() -> None:
{upgrade}


def downgrade() -> None:
{downgrade}
'''


def _group_operations(g: str) -> list[tuple[str, str, str]]:
    """Ten revisions (message, upgrade body, downgrade body) touching the tables of group `g`."""
    accounts, orders, events = f"{g}_accounts", f"{g}_orders", f"{g}_events"
    events_table = (f'op.create_table("{events}", sa.Column("id", sa.Integer, primary_key=True), '
                    f'sa.Column("payload", sa.Text))')
    return [
        (f"create {accounts}",
         f'op.create_table("{accounts}", sa.Column("id", sa.Integer, primary_key=True), '
         f'sa.Column("email", sa.String(100), nullable=False), sa.Column("status", sa.String(20)), '
         f'sa.Column("created_at", sa.DateTime, server_default=sa.func.now()))',
         f'op.drop_table("{accounts}")'),
        (f"create {orders}",
         f'op.create_table("{orders}", sa.Column("id", sa.Integer, primary_key=True), '
         f'sa.Column("account_id", sa.Integer, sa.ForeignKey("{accounts}.id")), '
         f'sa.Column("amount", sa.Numeric(10, 2)), sa.Column("note", sa.Text))',
         f'op.drop_table("{orders}")'),
        (f"create {events}", events_table, f'op.drop_table("{events}")'),
        (f"add {accounts}.preferences",
         f'op.add_column("{accounts}", sa.Column("preferences", sa.Text, nullable=True))',
         f'op.drop_column("{accounts}", "preferences")'),
        (f"widen {accounts}.email",
         f'op.alter_column("{accounts}", "email", type_=sa.String(255), existing_type=sa.String(100))',
         f'op.alter_column("{accounts}", "email", type_=sa.String(100), existing_type=sa.String(255))'),
        (f"index {orders}.account_id",
         f'op.create_index("ix_{orders}_account_id", "{orders}", ["account_id"])',
         f'op.drop_index("ix_{orders}_account_id", table_name="{orders}")'),
        (f"backfill {accounts}.status",
         f"op.execute(\"UPDATE {accounts} SET status = 'active' WHERE status IS NULL\")",
         f"op.execute(\"UPDATE {accounts} SET status = NULL WHERE status = 'active'\")"),
        (f"drop {orders}.note",
         f'op.drop_column("{orders}", "note")',
         f'op.add_column("{orders}", sa.Column("note", sa.Text, nullable=True))'),
        (f"{accounts}.status NOT NULL",
         f'op.alter_column("{accounts}", "status", nullable=False, existing_type=sa.String(20))',
         f'op.alter_column("{accounts}", "status", nullable=True, existing_type=sa.String(20))'),
        (f"drop {events}", f'op.drop_table("{events}")', events_table),
    ]


def write_project(root: Path, revisions: int) -> Path:
    """Write an Alembic project with a linear chain of `revisions` revisions; returns its alembic.ini."""
    versions = root / "versions"
    versions.mkdir(parents=True)
    (root / "alembic.ini").write_text(ALEMBIC_INI)
    (root / "env.py").write_text(ENV_PY)
    down: str | None = None
    for number in range(revisions):
        group, step = divmod(number, OPS_PER_GROUP)
        message, upgrade, downgrade = _group_operations(f"g{group:03d}")[step]
        revision = f"{number:04d}{'b' * 8}"
        body = REVISION_TEMPLATE.format(
            message=message.capitalize(), revision=revision, down_revision=down or "",
            down_literal=repr(down), upgrade=textwrap.indent(upgrade, "    "),
            downgrade=textwrap.indent(downgrade, "    "),
        )
        (versions / f"{revision}_{message.replace(' ', '_').replace('.', '_')}.py").write_text(body)
        down = revision
    return root / "alembic.ini"


def migrate_to_head(ini: Path, url: str, revisions: int) -> None:
    """Upgrade the database to head, then give every surviving table some rows to count."""
    config = Config(str(ini))
    engine = create_engine(url, poolclass=pool.NullPool)
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, "head")
    engine.dispose()
    with psycopg.connect(url.replace("+psycopg", ""), autocommit=True) as conn:
        for group in range(revisions // OPS_PER_GROUP):
            g = f"g{group:03d}"
            conn.execute(f"INSERT INTO {g}_accounts (email, status, preferences) "
                         "SELECT CASE WHEN i % 50 = 0 THEN repeat('x', 120) ELSE 'user' || i || '@example.com' END, "
                         "CASE WHEN i % 3 = 0 THEN 'active' ELSE 'closed' END, "
                         "CASE WHEN i % 4 = 0 THEN '{}' END FROM generate_series(1, 1000) AS i")
            conn.execute(f"INSERT INTO {g}_orders (account_id, amount) "
                         f"SELECT 1 + i % 1000, i / 10.0 FROM generate_series(1, 2000) AS i")
        conn.execute("VACUUM ANALYZE")


def run_timed(args: list[str], env: dict[str, str]) -> tuple[float, str]:
    """Run one command as a fresh process; returns its wall time in seconds and its stdout."""
    started = time.perf_counter()
    result = subprocess.run(args, env=env, capture_output=True, text=True, check=False)
    elapsed = time.perf_counter() - started
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} exited with {result.returncode}:\n{result.stderr}")
    return elapsed, result.stdout


@dataclass(frozen=True)
class Subject:
    """One command to time, and how to check that its output covers the whole path."""

    name: str
    args: list[str]
    env: dict[str, str]


def check_output(subject: Subject, stdout: str, revisions: int) -> None:
    """Fail loudly if a run did not render or plan every revision."""
    if subject.name == "alembic_offline_sql":
        found = stdout.count("-- Running downgrade")
    else:
        found = len(json.loads(stdout)["steps"])
    if found != revisions:
        raise RuntimeError(f"{subject.name} covered {found} revisions, expected {revisions}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--revisions", type=int, default=300)
    parser.add_argument("--runs", type=int, default=5)
    options = parser.parse_args()
    if options.revisions % OPS_PER_GROUP:
        parser.error(f"--revisions must be a multiple of {OPS_PER_GROUP}")

    with tempfile.TemporaryDirectory(prefix="rollbook-bench-chain-") as work:
        work_dir = Path(work)
        ini = write_project(work_dir / "project", options.revisions)
        with embedded_database(work_dir, DATABASE) as url:
            migrate_to_head(ini, url, options.revisions)

            # Bytecode is cached as for a normal user, but in the temp dir: nothing written elsewhere.
            env = {k: v for k, v in os.environ.items()
                   if k not in ("DATABASE_URL", "ALEMBIC_CONFIG", "PYTHONDONTWRITEBYTECODE")}
            env["PYTHONPYCACHEPREFIX"] = str(work_dir / "pycache")
            rollbook_env = {**env, "DATABASE_URL": url}
            plan = [str(BIN_DIR / "rollbook"), "plan", "--config", str(ini), "--target", "base", "--json"]
            subjects = [
                Subject("alembic_offline_sql",
                        [str(BIN_DIR / "alembic"), "-c", str(ini), "downgrade", "head:base", "--sql"], env),
                Subject("rollbook_plan_live_checks", plan, rollbook_env),
                Subject("rollbook_plan_no_live_checks", [*plan, "--no-live-checks"], rollbook_env),
            ]
            # One untimed round compiles every module and migration file for all subjects alike.
            for subject in subjects:
                check_output(subject, run_timed(subject.args, subject.env)[1], options.revisions)
            samples: dict[str, list[float]] = {s.name: [] for s in subjects}
            for _ in range(options.runs):  # interleaved, so drift hits every subject alike
                for subject in subjects:
                    samples[subject.name].append(run_timed(subject.args, subject.env)[0])

    medians, ratios = summarize(samples, "alembic_offline_sql")
    verdict = "PASS" if ratios["rollbook_plan_live_checks"] <= BAR else "FAIL"
    print(f"{options.revisions} revisions, {options.runs} runs each (fresh processes), medians:")
    for name, times in samples.items():
        print(f"  {name:30} median {medians[name]:.3f} s  min {min(times):.3f} s  "
              f"ratio {ratios[name]:.2f}x")
    print(f"rollbook plan (live checks) / alembic --sql = {ratios['rollbook_plan_live_checks']:.2f}x "
          f"(bar {BAR}x): {verdict}")

    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps({
        "benchmark": "plan_chain", "revisions": options.revisions, "runs": options.runs, "bar": BAR,
        "samples_seconds": samples, "median_seconds": medians,
        "min_seconds": {name: min(times) for name, times in samples.items()},
        "ratio_to_alembic": ratios, "verdict": verdict, "machine": machine(alembic=alembic.__version__),
    }, indent=2) + "\n")
    print(f"results written to {RESULTS}")


if __name__ == "__main__":
    main()
