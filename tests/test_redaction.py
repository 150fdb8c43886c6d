"""No secret reaches the archive: collected from URLs, environment and parameters, scrubbed, checked before filing."""

from __future__ import annotations

import copy
import html
import json
from pathlib import Path
from typing import Any
from urllib.parse import quote, quote_plus

import nbformat
import pytest

from rollbook.errors import RollbookError
from rollbook.records.archive import Archive, SecretInRecord
from rollbook.records.archive_files import RECORD_MIME
from rollbook.records.model import read_record
from rollbook.redaction.connection_secrets import secrets_in_text
from rollbook.redaction.redact import collect_secrets, find_secrets, redact_notebook, redact_text

# Characters that URLs, JSON and HTML each spell differently.
PASSWORD = 'S3cr@t&<pw>/x"9'
TOKEN = "ghp_0123456789abcdef"
URL = f"postgresql+psycopg://app:{quote(PASSWORD, safe='')}@db.internal:5432/app"


def spellings(secret: str) -> set[str]:
    """Every way the secret could sit in an archived byte."""
    return {secret, quote(secret, safe=""), quote_plus(secret), quote(secret), json.dumps(secret)[1:-1],
            json.dumps(secret, ensure_ascii=False)[1:-1], html.escape(secret), html.escape(secret, quote=False)}


def leaked_notebook() -> nbformat.NotebookNode:
    """An executed runbook with the password everywhere papermill and a failing cell put one."""
    notebook = nbformat.v4.new_notebook()
    notebook.metadata["papermill"] = {
        "parameters": {"database_url": URL, "options": {"hosts": [URL], "retries": 3}},
        "environment_variables": {}, "input_path": "rollback.ipynb", "output_path": "out.ipynb",
    }
    notebook.cells = [
        nbformat.v4.new_code_cell('database_url = ""', metadata={"tags": ["parameters"]}),
        nbformat.v4.new_code_cell(f'# Parameters\ndatabase_url = "{URL}"\n',
                                  metadata={"tags": ["injected-parameters"]}),
        nbformat.v4.new_code_cell("run = start()", execution_count=1, outputs=[
            nbformat.v4.new_output("stream", name="stderr", text=f"connecting as app with {PASSWORD}\n"),
            nbformat.v4.new_output("display_data", data={
                "text/markdown": f"**database** `{URL}` password `{PASSWORD}`",
                "text/html": f"<code>{html.escape(PASSWORD)}</code>",
                "text/plain": repr(PASSWORD),
                "application/json": {"url": URL, "token": TOKEN},
                RECORD_MIME: {"run_id": "20261124T123456Z-3f9a1c", "runbook": "rollback", "database": URL},
            }),
        ]),
        nbformat.v4.new_code_cell("run.execute()", execution_count=2, outputs=[
            nbformat.v4.new_output("error", ename="OperationalError", evalue=f"auth failed for {URL}", traceback=[
                "\x1b[0;31m---------------------------------------------------------------------------\x1b[0m",
                f"\x1b[0;32m----> 1\x1b[0m connect(\x1b[38;5;124m\"{URL}\"\x1b[39m)",
                f"OperationalError: password {PASSWORD!r} rejected; also tried https://deploy:{TOKEN}@github.com/x",
            ]),
        ]),
        nbformat.v4.new_markdown_cell("Unrelated: https://ci:other-unlisted-pw@ci.example.com/job stays masked."),
    ]
    return notebook


def summary(**extra: Any) -> dict[str, Any]:
    return {"run_id": "20261124T123456Z-3f9a1c", "runbook": "rollback", "started_at": "2026-11-24T12:34:56+00:00",
            "outcome": "failed", "database": "postgresql+psycopg://app:***@db.internal:5432/app",
            "identity": {"database": "app", "server_version": "16.4", "system_identifier": "7300000000000000001"},
            **extra}


def every_archived_byte(root: Path) -> list[tuple[str, bytes]]:
    """Each file under the archive folder (hidden ones included) as (relative path, bytes)."""
    return [(str(path.relative_to(root)), path.read_bytes()) for path in sorted(root.rglob("*")) if path.is_file()]


def test_collect_secrets_finds_url_passwords_secret_variables_and_their_encodings() -> None:
    environ = {
        "PGPASSWORD": "pg-pass-1", "DATABASE_URL": "postgresql://app:env%2Fpw@db/app", "GITHUB_TOKEN": TOKEN,
        "AWS_SECRET_ACCESS_KEY": "aws/secret+key", "OPENAI_API_KEY": "sk-123456", "DB_PASSWD": "passwd-1",
        "SHORT_TOKEN": "abc", "TOKENIZERS_PARALLELISM": "false", "HOME": "/root", "PATH": "/usr/bin:/bin",
    }
    parameters = {"database_url": URL, "mirrors": [{"url": "https://u:mirror-pw@mirror.example/x"}],
                  "settings": {"api_token": "param-token"}, "retries": 3, "target_revision": "0002"}
    secrets = collect_secrets(environ, parameters)

    for secret in ("pg-pass-1", TOKEN, "aws/secret+key", "sk-123456", "passwd-1", PASSWORD, "mirror-pw",
                   "param-token", "env/pw"):
        assert secret in secrets, secret
    assert quote(PASSWORD, safe="") in secrets and quote_plus(PASSWORD) in secrets
    assert "env%2Fpw" in secrets and quote("aws/secret+key", safe="") in secrets
    # Short values, settings and ordinary variables are not secrets.
    assert not {"abc", "false", "/root", "/usr/bin:/bin", "0002", "app"} & secrets


def test_secrets_in_text_reads_urls_both_ways_and_ignores_masked_ones() -> None:
    assert secrets_in_text("postgresql://u:p%40ss@h/db") == {"p@ss", "p%40ss"}
    assert secrets_in_text("https://x:tok123@host:8080/a and redis://:abcd@h") == {"tok123", "abcd"}
    assert secrets_in_text("postgresql://u:***@h/db https://host/path@x http://host:8080/") == set()


def test_redact_notebook_scrubs_every_string_and_masks_any_url_password() -> None:
    notebook = leaked_notebook()
    original = copy.deepcopy(notebook)
    secrets = collect_secrets({"PGPASSWORD": PASSWORD, "GITHUB_TOKEN": TOKEN}, {"database_url": URL})
    redacted = redact_notebook(notebook, secrets)

    assert notebook == original  # a copy: the input is untouched
    assert isinstance(redacted, nbformat.NotebookNode)
    nbformat.validate(redacted)
    text = json.dumps(redacted)
    for secret in (PASSWORD, TOKEN, "other-unlisted-pw"):
        for spelling in spellings(secret):
            assert spelling not in text, spelling
    assert redacted.metadata.papermill.parameters.database_url == \
        "postgresql+psycopg://app:***@db.internal:5432/app"
    masked = "postgresql+psycopg://app:***@db.internal:5432/app"
    assert redacted.cells[1].source == f'# Parameters\ndatabase_url = "{masked}"\n'
    assert redacted.cells[2].outputs[0].text == "connecting as app with ***\n"
    assert "https://ci:***@ci.example.com/job" in redacted.cells[4].source
    assert redacted.cells[3].outputs[0].traceback[0] == original.cells[3].outputs[0].traceback[0]
    # A plain dict in, a plain dict out.
    assert type(redact_notebook(json.loads(nbformat.writes(notebook)), secrets)) is dict


def test_no_archived_byte_holds_the_password_after_redaction_and_filing(tmp_path: Path) -> None:
    environ = {"PGPASSWORD": PASSWORD, "GITHUB_TOKEN": TOKEN}
    parameters = {"database_url": URL}
    secrets = collect_secrets(environ, parameters)
    archive = Archive(tmp_path / "records")
    archive.ensure_writable()
    # The run's progress, with the password in a message and a URL, as a careless step might save it.
    archive.write_progress(read_record(summary(outcome="running", message=f"login failed: {PASSWORD}", database=URL)),
                           secrets=secrets)
    # Another run that never got filed: its in-progress file stays in the archive.
    archive.write_progress(read_record(summary(run_id="20261124T130000Z-777777", outcome="running",
                                               parameters=parameters)), secrets=secrets)
    archive.file_summary(summary(), secrets=secrets)
    notebook = redact_notebook(leaked_notebook(), secrets)
    record = archive.file_notebook(nbformat.writes(notebook).encode(), summary(), secrets=secrets)

    files = every_archived_byte(archive.root)
    names = [name for name, _ in files]
    assert record.file in names and "manifest.jsonl" in names
    assert ".in-progress/20261124T130000Z-777777.json" in names
    for name, data in files:
        for secret in (PASSWORD, TOKEN):
            for spelling in spellings(secret):
                assert spelling not in name and spelling.encode() not in data, (name, spelling)
    assert archive.verify().ok
    assert archive.progress("20261124T130000Z-777777").parameters["database_url"].startswith(
        "postgresql+psycopg://app:***@")


def test_a_secret_left_in_a_notebook_is_refused_and_nothing_is_written(tmp_path: Path) -> None:
    secrets = collect_secrets({"PGPASSWORD": PASSWORD}, {"database_url": URL})
    archive = Archive(tmp_path / "records")
    # Scrubbed without the secrets: the URLs are masked, but the bare password in outputs is still there.
    half_scrubbed = nbformat.writes(redact_notebook(leaked_notebook(), frozenset())).encode()
    with pytest.raises(SecretInRecord) as refused:
        archive.file_notebook(half_scrubbed, summary(), secrets=secrets)
    message = str(refused.value)
    assert isinstance(refused.value, RollbookError)
    assert "15-character secret" in message and "nothing was written" in message
    assert not any(spelling in message for spelling in spellings(PASSWORD))
    assert not archive.root.exists()

    archive.ensure_writable()
    before = every_archived_byte(archive.root)
    with pytest.raises(SecretInRecord):
        archive.file_summary(summary(message=f"failed with {PASSWORD}"), secrets=secrets)
    with pytest.raises(SecretInRecord):
        archive.file_summary(summary(ticket=quote(PASSWORD, safe="")), secrets=secrets)
    assert every_archived_byte(archive.root) == before


def test_file_summary_masks_url_passwords_it_was_not_told_about(tmp_path: Path) -> None:
    archive = Archive(tmp_path / "records")
    record = archive.file_summary(summary(parameters={"database_url": "postgresql://app:hunter22@db/app"}))
    assert b"hunter22" not in record.path.read_bytes()
    assert archive.load_record(record).parameters["database_url"] == "postgresql://app:***@db/app"


def test_find_secrets_names_a_leak_without_revealing_it() -> None:
    secrets = collect_secrets({"PGPASSWORD": PASSWORD}, {})
    data = f'{{"text": "{json.dumps(PASSWORD)[1:-1]}"}}'.encode()
    hints = find_secrets(data, secrets)
    assert hints == ["a 15-character secret (JSON-escaped) at byte 10"]
    encoded = quote(PASSWORD, safe="").encode()
    assert find_secrets(encoded, {PASSWORD}) == ["a 15-character secret (percent-encoded) at byte 0"]
    # collect_secrets lists the encoded form too: the longest match is reported, once.
    assert find_secrets(encoded, secrets) == [f"a {len(encoded)}-character secret (as typed) at byte 0"]
    assert find_secrets(b"nothing to see", secrets) == []
    assert find_secrets(b"abc", {"abc"}) == []  # too short to be treated as a secret


def test_redact_text_replaces_longest_secrets_first() -> None:
    assert redact_text("pw=secret-long and secret", frozenset({"secret", "secret-long"})) == "pw=*** and ***"
    assert redact_text("see postgresql://u:***@h/db", frozenset()) == "see postgresql://u:***@h/db"
