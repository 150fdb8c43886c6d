"""Passwords in connection strings, every form libpq and SQLAlchemy accept: they work, and they never leak.

Each form is used the way an operator would: `rollbook status`, `plan --json`, `rollbook run` (a dry
run of the rollback runbook, with `-o`), plain papermill, and one strict site build of the archive
they leave. Every byte of what they print and write is searched for each password in every spelling.
"""

from __future__ import annotations

import html
import json
import os
import secrets
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote, quote_plus

import psycopg
import pytest
from pg import PgServer, psycopg_kwargs
from psycopg import sql
from runbook_runs import papermill
from site_build import build_site
from sqlalchemy.engine import make_url
from test_cli import ROLLBOOK

from rollbook.demo.server import DEMO_CONFIG
from rollbook.redaction.connection_secrets import (
    UnreadableConnectionString,
    mask_secrets_in_text,
    secret_leaks,
    secrets_in_text,
    split_connection_string,
)

HEAD = "0607bc5b8536"
DRY_RUN = ("-p", "environment", "staging", "-p", "operator", "alice", "-p", "accept_data_loss", "True")


@dataclass(frozen=True)
class Form:
    """One way of giving the password: the connection string, the role's password, and every secret in it."""

    name: str
    connection: str
    password: str
    secrets: tuple[str, ...]


def spellings(secret: str) -> set[str]:
    """Every way a secret can be written into text: as typed, percent-encoded, JSON- and HTML-escaped."""
    return {secret, quote(secret, safe=""), quote_plus(secret, safe=""), quote(secret), json.dumps(secret)[1:-1],
            html.escape(secret), json.dumps(html.escape(secret))[1:-1]}


def leaked(data: bytes, secrets_: tuple[str, ...]) -> list[str]:
    return [s for secret in secrets_ for s in spellings(secret) if s.encode() in data]


@pytest.fixture
def secret_role(pg_server: PgServer, demo_url: str) -> Iterator[str]:
    """A login role that may read the demo database; its password is set by each form."""
    role = f"rb_secret_{secrets.token_hex(4)}"
    admin = pg_server.admin()
    admin.execute(sql.SQL("CREATE ROLE {} LOGIN").format(sql.Identifier(role)))
    with psycopg.connect(**psycopg_kwargs(demo_url), autocommit=True) as conn:
        conn.execute(sql.SQL("GRANT SELECT ON ALL TABLES IN SCHEMA public TO {}").format(sql.Identifier(role)))
    try:
        yield role
    finally:
        with psycopg.connect(**psycopg_kwargs(demo_url), autocommit=True) as conn:
            conn.execute(sql.SQL("DROP OWNED BY {}").format(sql.Identifier(role)))
        admin.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(role)))


def working_forms(demo_url: str, role: str) -> list[Form]:
    url = make_url(demo_url)
    where = f"{url.host}:{url.port}/{url.database}"
    token = secrets.token_hex(5)
    userinfo = f"Ui{token}%p@ss:w/rd"
    query = f"Qp{token}&=+ %x"
    ssl_login, ssl_key = f"Sl{token}%:", f"Sk{token}@&/"
    keyword = f"Kw {token}'q\\z"
    slash_colon = f"Sc{token}/pw:x"
    return [
        Form("userinfo", f"postgresql+psycopg://{role}:{quote(userinfo, safe='')}@{where}", userinfo, (userinfo,)),
        Form("?password=", f"postgresql+psycopg://{role}@{where}?password={quote(query, safe='')}", query, (query,)),
        Form("?sslpassword=", f"postgresql+psycopg://{role}:{quote(ssl_login, safe='')}@{where}?sslpassword="
             f"{quote(ssl_key, safe='')}&application_name=rb", ssl_login, (ssl_login, ssl_key)),
        Form("keywords", f"host={url.host} port={url.port} dbname={url.database} user={role} "
             f"password='{keyword.replace(chr(92), chr(92) * 2).replace(chr(39), chr(92) + chr(39))}'",
             keyword, (keyword,)),
        Form("unencoded / and :", f"postgresql+psycopg://{role}:{slash_colon}@{where}", slash_colon, (slash_colon,)),
    ]


def rollbook(tmp_path: Path, *args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    environment = {key: value for key, value in os.environ.items() if key not in ("DATABASE_URL", "PGPASSWORD")}
    environment |= {"ALEMBIC_CONFIG": str(DEMO_CONFIG), "ROLLBOOK_ARCHIVE": str(tmp_path / "archive"), **env}
    return subprocess.run([ROLLBOOK, *args], capture_output=True, text=True, timeout=300, cwd=tmp_path,
                          env=environment)


def set_password(pg_server: PgServer, role: str, password: str) -> None:
    pg_server.admin().execute(sql.SQL("ALTER ROLE {} PASSWORD {}").format(sql.Identifier(role), sql.Literal(password)))


def test_every_form_connects_and_no_byte_anywhere_holds_its_password(tmp_path, pg_server, demo_url, secret_role):
    forms = working_forms(demo_url, secret_role)
    (tmp_path / "papermill").mkdir()  # plain papermill's output notebooks: they hold the password, as documented
    printed: list[str] = []
    outputs: list[Path] = []
    for form in forms:
        set_password(pg_server, secret_role, form.password)
        status = rollbook(tmp_path, "status", "--database-url", form.connection, env={})
        plan = rollbook(tmp_path, "plan", "--json", env={"DATABASE_URL": form.connection})
        output = tmp_path / f"out-{len(outputs)}.ipynb"
        run = rollbook(tmp_path, "run", "rollback", *DRY_RUN, "-p", "database_url", form.connection, "-o", str(output),
                       env={})
        by_environment = rollbook(tmp_path, "run", "status", env={"DATABASE_URL": form.connection})
        plain = papermill(tmp_path / "papermill", "status", "-p", "database_url", form.connection, url="",
                          env={"ROLLBOOK_ARCHIVE": str(tmp_path / "archive")})

        # The password works: each command reached the database as the role.
        assert status.returncode == 0 and HEAD in status.stdout, (form.name, status.stderr)
        assert plan.returncode == 0 and json.loads(plan.stdout)["current"] == HEAD, (form.name, plan.stderr)
        assert run.returncode == 0 and run.stdout.startswith("dry run completed"), (form.name, run.stdout, run.stderr)
        assert by_environment.returncode == 0, (form.name, by_environment.stdout, by_environment.stderr)
        assert plain.returncode != 0 and "carries a password" in plain.error, (form.name, plain.error)
        printed += [status.stdout, status.stderr, plan.stdout, plan.stderr, run.stdout, run.stderr,
                    by_environment.stdout, by_environment.stderr]
        outputs.append(output)
    all_secrets = tuple(secret for form in forms for secret in form.secrets)
    archive = tmp_path / "archive"
    records = sorted(archive.glob("*.ipynb"))
    assert len(records) == 2 * len(forms)
    assert all(secret_role in record.read_text() for record in records)  # the identity: who connected

    site = build_site(tmp_path / "site", archive)

    assert site.returncode == 0, site.output
    assert (site.site / "search" / "search_index.json").is_file()
    assert len(list((site.site / "archive").glob("*/index.html"))) >= len(records)
    files = [p for root in (archive, site.site) for p in root.rglob("*") if p.is_file()] + outputs
    assert not {str(path): found for path in files if (found := leaked(path.read_bytes(), all_secrets))}
    assert not leaked("\n".join([*printed, site.output]).encode(), all_secrets)
    assert not [path for path in files if any(s[2:12] in path.name for s in all_secrets)]


def test_a_password_with_an_unencoded_at_is_refused_echoing_no_part_of_the_url(tmp_path, demo_url):
    url = make_url(demo_url)
    left, right = f"Le{secrets.token_hex(5)}", f"Ri{secrets.token_hex(5)}"
    connection = f"postgresql+psycopg://someone:{left}@{right}@{url.host}:{url.port}/{url.database}"

    status = rollbook(tmp_path, "status", "--database-url", connection, env={})
    plan = rollbook(tmp_path, "plan", "--json", env={"DATABASE_URL": connection})
    run = rollbook(tmp_path, "run", "rollback", *DRY_RUN, "-p", "database_url", connection, env={})
    plain = papermill(tmp_path, "status", "-p", "database_url", connection, url="",
                      env={"ROLLBOOK_ARCHIVE": str(tmp_path / "archive")})

    for result, source in ((status, "--database-url"), (plan, "DATABASE_URL"), (run, "database_url parameter")):
        assert result.returncode == 2, result.stderr
        assert result.stdout == "" and "Traceback" not in result.stderr
        assert result.stderr.startswith("rollbook: ") and result.stderr.count("\n") == 1, result.stderr
        assert source in result.stderr and "more than one '@'" in result.stderr and "%40" in result.stderr
        for part in (left, right, "someone", url.host, str(url.port), url.database):
            assert part not in result.stderr, part
    assert plain.returncode != 0 and "more than one '@'" in plain.error and left not in plain.error
    # Nothing was started by rollbook run; the plain papermill run's own record holds no fragment either.
    archived = [p for p in (tmp_path / "archive").rglob("*") if p.is_file()]
    assert not [p for p in archived if left.encode() in p.read_bytes() or right.encode() in p.read_bytes()]
    assert not [p for p in archived if left in p.name or right in p.name]


@pytest.mark.parametrize(("text", "expected"), [
    ("postgresql+psycopg://app:s%40cret-1@db/app", ("postgresql+psycopg://app@db/app", "s@cret-1", None)),
    ("postgresql://app@db/app?sslmode=require&password=p%2Bw+x", ("postgresql://app@db/app?sslmode=require", "p+w x",
                                                                 None)),
    ("postgresql://app:pw@db/app?sslpassword=k%26ey", ("postgresql://app@db/app", "pw", "k&ey")),
    ("host=db dbname=app password='a b\\'c' sslpassword=k3yZ", ("dbname=app host=db", "a b'c", "k3yZ")),
    ("postgresql://app:p/w:x?y@db:5432/app", ("postgresql://app@db:5432/app", "p/w:x?y", None)),
    ("postgresql://db/app?options=-c%20a%3Db@x", ("postgresql://db/app?options=-c%20a%3Db@x", None, None)),
])
def test_every_form_is_split_into_what_may_be_shown_and_its_secrets(text, expected):
    connection = split_connection_string(text, source="test")
    assert (connection.without_secrets, connection.password, connection.sslpassword) == expected
    assert all(secret not in repr(connection) for secret in connection.secrets)


@pytest.mark.parametrize("text", [
    "postgresql://app:p@ss@db/app", "postgresql://app:pw@db/ap@p", "postgresql://a:pw@db/app?password=other",
    "host=db password='unterminated",
])
def test_an_unreadable_connection_string_is_refused_without_echoing_it(text):
    with pytest.raises(UnreadableConnectionString) as refused:
        split_connection_string(text, source="the database_url parameter")
    assert "the database_url parameter" in str(refused.value)
    assert not [part for part in ("app", "ss@db", "pw", "other", "unterminated") if part in str(refused.value)]


def test_free_text_secrets_are_found_masked_and_reported_in_every_form():
    text = ("a postgresql://u:p@ss@h/db, host=h password='q w' x, https://h/x?sslpassword=k3y&a=1, u:***@h, "
            "password=*** and hide_password=False")
    assert secrets_in_text(text) >= {"p@ss", "q w", "k3y"}
    masked = mask_secrets_in_text(text)
    assert not [s for s in ("p@ss", "q w", "k3y") if s in masked]
    assert "postgresql://u:***@h/db" in masked and "hide_password=False" in masked
    assert secret_leaks(masked) == []
    leaks = secret_leaks(text)
    assert len(leaks) == 3 and not [s for s in ("p@ss", "q w", "k3y") if s in " ".join(leaks)]


@pytest.mark.parametrize("text", [
    "postgresql://app@db:5433/app?password=Pw%40x-1&sslpassword=Key-2&sslmode=prefer",
    "host=db port=5433 dbname=app user=app password='Pw@x-1' sslpassword=Key-2 sslmode=prefer",
])
def test_a_target_connects_with_every_secret_and_shows_none(text):
    from rollbook.pg.database import DatabaseTarget

    target = DatabaseTarget.from_url(text)

    assert {k: target.connect_kwargs()[k] for k in ("host", "port", "user", "dbname", "password", "sslpassword",
                                                    "sslmode")} == {
        "host": "db", "port": 5433, "user": "app", "dbname": "app", "password": "Pw@x-1", "sslpassword": "Key-2",
        "sslmode": "prefer"}
    assert target.redacted == "postgresql+psycopg://app:***@db:5433/app?sslmode=prefer"
    assert target.libpq_url_without_secrets == "postgresql://app@db:5433/app?sslmode=prefer"
    assert target.scrub("auth failed for Pw@x-1 (Pw%40x-1), key Key-2") == "auth failed for *** (***), key ***"
