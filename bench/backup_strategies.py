"""Benchmark: the backup strategies before a downgrade that drops one short text column of a 3 GB table.

On an embedded PostgreSQL server, builds a database of about 4.5 GB (`events`, about 3.4 GB with its
primary key, and `accounts`, about 1 GB; normal logged tables, filled by INSERT ... SELECT from
generate_series) and an Alembic project whose head revision added `events.tag` (8 characters, every
row). Then times, once each (they take minutes):

- `full`: rollbook's `take_backup` (`pg_dump -Fc` of the whole database);
- `parallel`: `pg_dump -Fd -j 2` of the whole database, the parallel strategy's dump;
- `at_risk`: rollbook's `take_at_risk_backup` for the plan of `downgrade -1` (the (id, tag) pairs);
- `pitr`: rollbook's `create_wal_restore_point` on the server archiving WAL into a folder (`cp`), after
  a base backup (`pg_basebackup`, timed apart: a team takes those on its own schedule);
- the restore paths: the full dump restored into a new database (`pg_restore`, one job); the cluster
  restored to the restore point (the base backup started with `recovery_target_name`, until it
  accepts connections, after the real downgrade ran); and the lost-data restore after that
  downgrade and a fix-forward upgrade (`restore_lost_data`).

Bars: at_risk_s <= 0.10 x full_s; pitr_s <= 2 s. parallel is reported as a ratio to full.

Run from the repository root: .venv/bin/python bench/backup_strategies.py [--scale 1.0] [--work-dir DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import psycopg
from alembic import command
from alembic.config import Config
from bench_support import machine, write_project
from psycopg import sql

from rollbook.pg.client_tools import find_pg_tool, libpq_environment
from rollbook.pg.database import DatabaseTarget, connect
from rollbook.pg.embedded_cluster import prepare_runtime_dirs
from rollbook.pg.embedded_install import as_account, server_account
from rollbook.pg.embedded_server import EmbeddedServer, start_embedded_server
from rollbook.planning.plan import DowngradePlan, plan_downgrade
from rollbook.project.migrations import MigrationProject, alembic_config_for, load_project
from rollbook.recovery.at_risk_backup import load_at_risk_backup, take_at_risk_backup
from rollbook.recovery.backup import take_backup
from rollbook.recovery.lost_data_restore import restore_lost_data
from rollbook.recovery.wal_restore_point import create_wal_restore_point

AT_RISK_BAR = 0.10
PITR_BAR_S = 2.0
DATABASE = "bench_backup"
RESULTS = Path(__file__).resolve().parent / "results" / "backup_strategies.json"
# Rows at scale 1: events rows are about 330 bytes on disk, accounts rows about 300.
EVENTS_ROWS, ACCOUNTS_ROWS = 10_000_000, 3_000_000
T = TypeVar("T")

REVISIONS = {
    "bench0000001": (None, "op.execute('CREATE TABLE events (id bigint NOT NULL, account_id int NOT NULL, "
                     "kind text NOT NULL, created_at timestamptz NOT NULL, payload text NOT NULL); "
                     "CREATE TABLE accounts (id bigint NOT NULL, email text NOT NULL, profile text NOT NULL)')",
                     "op.execute('DROP TABLE events, accounts')"),
    "bench0000002": ("bench0000001", "op.add_column('events', sa.Column('tag', sa.Text()))",
                     "op.drop_column('events', 'tag')"),
}
# Eight distinct md5s per row: a payload zlib cannot shrink to nothing, as real data.
PAYLOAD = " || ".join(f"md5(i::text || '{salt}')" for salt in "abcdefgh")


def load_data(target: DatabaseTarget, scale: float) -> dict[str, Any]:
    """Fill both tables (one INSERT ... SELECT each), add their primary keys, VACUUM ANALYZE; the sizes."""
    events, accounts = int(EVENTS_ROWS * scale), int(ACCOUNTS_ROWS * scale)
    started = time.monotonic()
    with connect(target) as conn:
        conn.execute("SET maintenance_work_mem = '512MB'")
        conn.execute(f"INSERT INTO events SELECT i, i % 100000, 'kind' || (i % 20), "
                     f"timestamptz '2026-01-01' + i * interval '1 second', {PAYLOAD}, "
                     f"'t' || lpad((i % 9999999)::text, 7, '0') FROM generate_series(1, {events}) i")
        conn.execute(f"INSERT INTO accounts SELECT i, 'user' || i || '@example.com', {PAYLOAD} "
                     f"FROM generate_series(1, {accounts}) i")
        conn.execute("ALTER TABLE events ADD PRIMARY KEY (id)")
        conn.execute("ALTER TABLE accounts ADD PRIMARY KEY (id)")
        conn.execute("VACUUM ANALYZE")
        conn.execute("CHECKPOINT")
        sizes = conn.execute("SELECT pg_database_size(current_database()), pg_total_relation_size('events'), "
                             "pg_total_relation_size('accounts')").fetchone()
    assert sizes is not None
    return {"events_rows": events, "accounts_rows": accounts, "load_s": time.monotonic() - started,
            "database_bytes": sizes[0], "events_bytes": sizes[1], "accounts_bytes": sizes[2]}


def timed(action: Callable[[], T]) -> tuple[float, T]:
    started = time.monotonic()
    result = action()
    return time.monotonic() - started, result


def pg_tool(target: DatabaseTarget, name: str, *arguments: str) -> None:
    """Run a client tool against `target`, the password in the environment as rollbook passes it."""
    with connect(target) as conn:
        major = conn.info.server_version // 10000
    tool = find_pg_tool(name, major)
    subprocess.run([str(tool.path), *arguments], env=libpq_environment(target), check=True,
                   stdin=subprocess.DEVNULL, capture_output=True)


@contextmanager
def bench_server(work: Path) -> Iterator[EmbeddedServer]:
    """A server with WAL archiving on; its archive_command discards segments until `archive_into` sets a folder."""
    server = start_embedded_server(work / "pg", settings={"archive_mode": "on"})
    try:
        set_archive_command(server, "true")
        yield server
    finally:
        server.stop(delete_data=True)
        shutil.rmtree(server.data_dir.parent / "wal-archive", ignore_errors=True)


def set_archive_command(server: EmbeddedServer, archive_command: str) -> None:
    with psycopg.connect(server.url().replace("+psycopg", ""), autocommit=True) as conn:
        conn.execute(sql.SQL("ALTER SYSTEM SET archive_command = {}").format(
            sql.Literal(archive_command)))
        conn.execute("SELECT pg_reload_conf()")


def archive_into(server: EmbeddedServer) -> Path:
    """Archive every WAL segment into a folder from now on, as a team's archive_command would.

    The folder is next to the cluster (the server's account can reach it; the work folder is root's own).
    """
    archive = server.data_dir.parent / "wal-archive"
    archive.mkdir(mode=0o700)
    account = server_account()
    if account is not None:
        os.chown(archive, account.uid, account.gid)
    folder = shlex.quote(str(archive))
    set_archive_command(server, f"test ! -f {folder}/%f && cp %p {folder}/%f")
    return archive


def base_backup(server: EmbeddedServer, base_dir: Path) -> Path:
    """pg_basebackup of the whole cluster into a new embedded-server folder; its data directory."""
    account = server_account()
    base_dir.mkdir()
    data_dir, _ = prepare_runtime_dirs(base_dir, account)
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    subprocess.run([str(server.bin_dir / "pg_basebackup"), "-D", str(data_dir), "-h", str(server.socket_dir),
                    "-p", str(server.port), "-U", "postgres", "--checkpoint=fast", "--no-sync"],
                   env=env, cwd="/", check=True, capture_output=True, **as_account(account))
    return data_dir


def tags(url: str) -> int:
    with psycopg.connect(url.replace("+psycopg", "")) as conn:
        row = conn.execute("SELECT count(tag) FROM events").fetchone()
    return int(row[0]) if row else -1


def run(scale: float, work: Path, *, at_risk_only: bool = False) -> dict[str, Any]:
    results: dict[str, Any] = {"benchmark": "backup_strategies", "scale": scale, "bar_at_risk_vs_full": AT_RISK_BAR,
                               "bar_pitr_s": PITR_BAR_S}
    with bench_server(work) as server:
        with psycopg.connect(server.url().replace("+psycopg", ""), autocommit=True) as conn:
            conn.execute(f"CREATE DATABASE {DATABASE}")
        target = DatabaseTarget.from_url(server.url(DATABASE))
        project: MigrationProject = load_project(write_project(work / "project", REVISIONS))
        config = alembic_config_for(project, target)
        command.upgrade(config, "head")
        results["data"] = load_data(target, scale)
        print(f"loaded: {results['data']}", flush=True)
        tagged = tags(server.url(DATABASE))

        results["plan_s"], plan = timed(lambda: plan_downgrade(target, project, "-1"))
        if at_risk_only:
            return {**results, **at_risk_path(target, plan, config, work, tagged, server.url(DATABASE))}
        results["full_s"], full = timed(lambda: take_backup(target, work / "full", revisions=plan.path.current))
        results["full_bytes"] = full.size_bytes
        print(f"full: {results['full_s']:.1f} s", flush=True)
        results["parallel_s"], _ = timed(lambda: pg_tool(target, "pg_dump", "-Fd", "-j", "2", "-f",
                                                          str(work / "parallel"), DATABASE))
        results["parallel_bytes"] = sum(p.stat().st_size for p in (work / "parallel").iterdir())
        print(f"parallel: {results['parallel_s']:.1f} s", flush=True)
        results["at_risk_s"], at_risk = timed(lambda: take_at_risk_backup(target, plan, work / "at-risk"))
        results["at_risk_bytes"], results["at_risk_rows"] = at_risk.size_bytes, at_risk.rows
        print(f"at-risk: {results['at_risk_s']:.1f} s", flush=True)

        archive = archive_into(server)
        results["base_backup_s"], restored_data = timed(lambda: base_backup(server, work / "restored"))
        results["pitr_s"], point = timed(lambda: create_wal_restore_point(target, "bench",
                                                                          revisions=plan.path.current))
        results["pitr_archived"] = point.archived
        print(f"pitr: {results['pitr_s']:.2f} s (base backup {results['base_backup_s']:.1f} s)", flush=True)

        results["downgrade_s"], _ = timed(lambda: command.downgrade(config, "-1"))
        (restored_data / "recovery.signal").touch()
        recovery = {**point.recovery_settings(), "recovery_target_action": "promote", "hot_standby": "off",
                    "restore_command": f"cp {shlex.quote(str(archive))}/%f %p"}
        results["pitr_restore_s"], recovered = timed(lambda: start_embedded_server(work / "restored",
                                                                                   settings=recovery))
        try:
            results["pitr_restore_tags_equal"] = tags(recovered.url(DATABASE)) == tagged
        finally:
            recovered.stop(delete_data=True)
        print(f"pitr restore: {results['pitr_restore_s']:.1f} s", flush=True)
        set_archive_command(server, "true")  # the restores below are not part of the point-in-time test

        results["fix_forward_s"], _ = timed(lambda: command.upgrade(config, "head"))
        results["lost_data_restore_s"], lost = timed(lambda: restore_lost_data(
            target, load_at_risk_backup(at_risk.folder), execute=True))
        results["lost_data_restore_verified"] = lost.verified and tags(server.url(DATABASE)) == tagged
        print(f"lost-data restore: {results['lost_data_restore_s']:.1f} s, verified {lost.verified}", flush=True)

        with connect(target) as conn:
            conn.execute("CREATE DATABASE bench_restored")
        restored = DatabaseTarget.from_url(server.url("bench_restored"))
        results["full_restore_s"], _ = timed(lambda: pg_tool(restored, "pg_restore", "--no-owner", "-d",
                                                              "bench_restored", str(full.path)))
        print(f"full restore: {results['full_restore_s']:.1f} s", flush=True)
        with connect(target) as conn:
            version = conn.execute("SHOW server_version").fetchone()
            conn.execute("DROP DATABASE bench_restored")
        results["server_version"] = version[0] if version else None
    results["at_risk_vs_full"] = results["at_risk_s"] / results["full_s"]
    results["parallel_vs_full"] = results["parallel_s"] / results["full_s"]
    results["at_risk_meets_bar"] = results["at_risk_vs_full"] <= AT_RISK_BAR
    results["pitr_meets_bar"] = results["pitr_s"] <= PITR_BAR_S
    results["machine"] = machine(note="2 cores shared with other helpers' work while this ran")
    return results


def at_risk_path(target: DatabaseTarget, plan: DowngradePlan, config: Config, work: Path, tagged: int,
                 url: str) -> dict[str, Any]:
    """The at-risk backup, the real downgrade, the fix-forward and the lost-data restore alone."""
    results: dict[str, Any] = {"at_risk_only": True}
    results["at_risk_s"], at_risk = timed(lambda: take_at_risk_backup(target, plan, work / "at-risk"))
    results["at_risk_bytes"], results["at_risk_rows"] = at_risk.size_bytes, at_risk.rows
    results["downgrade_s"], _ = timed(lambda: command.downgrade(config, "-1"))
    results["fix_forward_s"], _ = timed(lambda: command.upgrade(config, "head"))
    results["lost_data_restore_s"], lost = timed(lambda: restore_lost_data(
        target, load_at_risk_backup(at_risk.folder), execute=True))
    results["lost_data_restore_verified"] = lost.verified and tags(url) == tagged
    results["machine"] = machine(note="2 cores shared with other helpers' work while this ran")
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", type=float, default=1.0, help="fraction of the rows (1.0: about 4.5 GB)")
    parser.add_argument("--work-dir", type=Path, default=None, help="where the server and the backups go")
    parser.add_argument("--at-risk-only", type=Path, default=None, metavar="RESULTS",
                        help="only the at-risk backup and the lost-data restore, written to RESULTS")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(dir=args.work_dir, prefix="bench-backup-") as work:
        results = run(args.scale, Path(work), at_risk_only=args.at_risk_only is not None)
    (args.at_risk_only or RESULTS).write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps({k: v for k, v in results.items() if k.endswith(("_s", "_full"))}, indent=2))


if __name__ == "__main__":
    main()
