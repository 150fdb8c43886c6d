"""Records written to and read from `s3://` URLs, against a real S3-compatible server on 127.0.0.1.

`rollbook run --output s3://...` and `rollbook archive add s3://...` go through papermill's S3 handler
(papermill.s3, boto3). The server is moto's standalone server, started once for this module: every
request is real HTTP, nothing in boto3 or papermill is patched.

The endpoint is given the standard boto3 way, AWS_ENDPOINT_URL (boto3 >= 1.28), which covers both the
client and the resource papermill creates. papermill's own BOTO3_ENDPOINT_URL only reaches its resource
(reads and writes, not listing); one test shows that it works for both calls rollbook makes.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote, quote_plus

import boto3
import nbformat
import pytest
from click.testing import CliRunner, Result
from moto.server import ThreadedMotoServer
from papermill.iorw import load_notebook_node, write_ipynb
from papermill.s3 import S3
from runbook_runs import RUNBOOKS, current_revision
from sqlalchemy.engine import make_url

from rollbook.cli import main
from rollbook.demo.server import DEMO_CONFIG
from rollbook.records.archive import Archive
from rollbook.records.archive_files import RECORD_MIME
from rollbook.records.model import RunRecord, read_record
from rollbook.redaction.redact import find_secrets

BUCKET = "records"
REGION = "us-east-1"
# Dummies moto accepts. rollbook treats AWS_SECRET_ACCESS_KEY as a secret and masks it in records: a
# common word here would be masked wherever the record says it.
ACCESS_KEY = "rollbook-test-access-key"
SECRET_KEY = "rollbook-test-secret-key-not-real"
STAGING = ("-p", "environment", "staging", "-p", "operator", "alice", "-p", "accept_data_loss", "True")


@pytest.fixture(scope="module")
def s3_endpoint() -> Iterator[str]:
    """moto's S3-compatible server on a free port of 127.0.0.1, with the bucket `records`."""
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    try:
        client(endpoint).create_bucket(Bucket=BUCKET)
        yield endpoint
    finally:
        server.stop()


@pytest.fixture(autouse=True)
def fresh_papermill_s3_session() -> Iterator[None]:
    """papermill caches one boto3 session per process (S3.s3_session), made from the environment of the
    first S3 call. Each CLI invocation here runs in this process: clear the cache around each test so
    that every invocation reads its own environment, as a new `rollbook` process would."""
    S3.s3_session = (None, None, None)
    yield
    S3.s3_session = (None, None, None)


def client(endpoint: str):  # noqa: ANN201 - boto3's client type is generated at run time
    return boto3.client("s3", endpoint_url=endpoint, region_name=REGION, aws_access_key_id=ACCESS_KEY,
                        aws_secret_access_key=SECRET_KEY)


def s3_env(tmp_path: Path, endpoint: str, *, variable: str = "AWS_ENDPOINT_URL") -> dict[str, str | None]:
    """Dummy credentials, a region and the endpoint; no shared config or profile of this machine."""
    return {
        "AWS_ACCESS_KEY_ID": ACCESS_KEY, "AWS_SECRET_ACCESS_KEY": SECRET_KEY, "AWS_SESSION_TOKEN": None,
        "AWS_DEFAULT_REGION": REGION, "AWS_PROFILE": None,
        "AWS_CONFIG_FILE": str(tmp_path / "no-aws-config"),
        "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "no-aws-credentials"),
        "AWS_ENDPOINT_URL": None, "BOTO3_ENDPOINT_URL": None, variable: endpoint,
    }


def rollbook_env(tmp_path: Path, endpoint: str, url: str | None) -> dict[str, str | None]:
    return {**s3_env(tmp_path, endpoint), "DATABASE_URL": url, "ALEMBIC_CONFIG": str(DEMO_CONFIG),
            "ROLLBOOK_ARCHIVE": str(tmp_path / "archive")}


def invoke(env: dict[str, str | None], *args: str) -> Result:
    # Expected failures must be handled by the CLI: let any other exception show as the test's failure.
    return CliRunner().invoke(main, list(args), env=env, catch_exceptions=False)


def s3_object(endpoint: str, key: str) -> bytes:
    return client(endpoint).get_object(Bucket=BUCKET, Key=key)["Body"].read()


def s3_keys(endpoint: str) -> set[str]:
    return {o["Key"] for o in client(endpoint).list_objects_v2(Bucket=BUCKET).get("Contents", [])}


def record_summaries(notebook: nbformat.NotebookNode) -> list[RunRecord]:
    return [read_record(o["data"][RECORD_MIME]) for c in notebook.cells for o in c.get("outputs", [])
            if RECORD_MIME in o.get("data", {})]


def filed(archive: Path, kind: str) -> list[tuple[dict, Path]]:
    """The manifest entries of one kind, with their files."""
    entries = [json.loads(line) for line in (archive / "manifest.jsonl").read_text().splitlines()]
    return [(e, archive / e["file"]) for e in entries if e["kind"] == kind]


def password_spellings(password: str) -> set[bytes]:
    return {form.encode() for form in (password, quote(password, safe=""), quote_plus(password, safe=""),
                                       json.dumps(password)[1:-1])}


def unique_key(name: str) -> str:
    return f"{name}-{uuid.uuid4().hex[:8]}.ipynb"


def assert_no_password(data: bytes, password: str) -> None:
    assert not [form for form in password_spellings(password) if form in data]
    assert not find_secrets(data, {password})


@pytest.mark.parametrize("password_in", ["environment", "parameter"])
def test_run_writes_the_archived_record_to_s3_without_the_password(tmp_path, demo_url, s3_endpoint, password_in):
    key = unique_key("run1")
    password = make_url(demo_url).password
    assert password
    by_parameter = ("-p", "database_url", demo_url) if password_in == "parameter" else ()
    env = rollbook_env(tmp_path, s3_endpoint, None if by_parameter else demo_url)

    result = invoke(env, "run", "rollback", *STAGING, "--execute", "-p", "backup_dir", str(tmp_path / "backups"),
                    *by_parameter, "--output", f"s3://{BUCKET}/{key}")

    assert result.exit_code == 0, result.output
    assert key in s3_keys(s3_endpoint)
    data = s3_object(s3_endpoint, key)
    notebook = nbformat.reads(data.decode(), as_version=4)
    nbformat.validate(notebook)
    summary = record_summaries(notebook)[-1]
    assert summary.outcome == "succeeded_unverified"  # no health_url: not fully verified
    assert summary.revision_before == ["0607bc5b8536"] and summary.revision_after == ["0607bc5b8535"]
    [(entry, record)] = filed(tmp_path / "archive", "notebook")
    assert entry["run_id"] == summary.run_id
    assert record.name in result.output
    assert data == record.read_bytes()
    assert_no_password(data, password)
    assert_no_password(result.output.encode(), password)
    assert SECRET_KEY.encode() not in data  # the S3 client's own secret is masked too
    if by_parameter:  # the URL reaches the record without its password, as the runbook was given it
        assert make_url(demo_url)._replace(password=None).render_as_string(hide_password=False).encode() in data


def test_a_plain_papermill_run_written_to_s3_is_filed_by_archive_add(tmp_path, demo_url, s3_endpoint):
    key = unique_key("plain")
    location = f"s3://{BUCKET}/{key}"
    env = rollbook_env(tmp_path, s3_endpoint, demo_url)
    environment = {name: value for name, value in {**os.environ, **env}.items() if value is not None}

    run = subprocess.run(
        [sys.executable, "-m", "papermill", str(RUNBOOKS / "rollback.ipynb"), location, "--no-progress-bar",
         *STAGING, "-p", "execute", "True", "-p", "backup_dir", str(tmp_path / "backups")],
        cwd=tmp_path, env=environment, capture_output=True, text=True, timeout=180,
    )

    assert run.returncode == 0, run.stderr[-3000:]
    assert key in s3_keys(s3_endpoint)
    [(summary_entry, summary_file)] = filed(tmp_path / "archive", "summary")
    written = read_record(json.loads(summary_file.read_text()))
    assert written.outcome == "succeeded_unverified"  # no health_url: not fully verified
    assert not filed(tmp_path / "archive", "notebook")

    added = invoke(env, "archive", "add", location)

    assert added.exit_code == 0, added.output
    assert added.output.startswith("succeeded")
    [(entry, record)] = filed(tmp_path / "archive", "notebook")
    assert entry["run_id"] == summary_entry["run_id"] == written.run_id
    assert record.name in added.output
    assert record_summaries(nbformat.read(record, as_version=4))[-1].run_id == written.run_id
    assert not find_secrets(record.read_bytes(), {make_url(demo_url).password})
    verify = invoke(env, "archive", "verify")
    assert verify.exit_code == 0, verify.output
    assert "2 record(s), hash chain intact" in verify.output
    again = invoke(env, "archive", "add", location)  # filing the same notebook twice adds nothing
    assert again.exit_code == 0, again.output
    assert len(Archive(tmp_path / "archive").records()) == 2


def unused_port() -> int:
    """A port of 127.0.0.1 that nothing listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# Each way an S3 location can fail: (endpoint, bucket) from the live server's endpoint.
S3_FAILURES = {
    "unreachable endpoint": lambda endpoint: (f"http://127.0.0.1:{unused_port()}", BUCKET),
    "missing bucket": lambda endpoint: (endpoint, f"no-such-bucket-{uuid.uuid4().hex[:8]}"),
}


@pytest.mark.parametrize("failure", ["missing object", *sorted(S3_FAILURES)])
def test_archive_add_of_an_s3_location_that_cannot_be_read_is_a_clear_error(tmp_path, s3_endpoint, failure):
    endpoint, bucket = S3_FAILURES[failure](s3_endpoint) if failure in S3_FAILURES else (s3_endpoint, BUCKET)
    location = f"s3://{bucket}/{unique_key('never-written')}"
    env = rollbook_env(tmp_path, endpoint, None)

    result = CliRunner().invoke(main, ["archive", "add", location], env=env)

    assert isinstance(result.exception, SystemExit), repr(result.exception)
    assert result.exit_code == 2, result.output
    assert f"Cannot read the executed notebook {location}" in result.output
    assert "Traceback" not in result.output
    assert not list((tmp_path / "archive").glob("*.ipynb"))


@pytest.mark.parametrize("variable", ["AWS_ENDPOINT_URL", "BOTO3_ENDPOINT_URL"])
def test_papermill_reaches_the_endpoint_by_either_variable(tmp_path, s3_endpoint, variable, monkeypatch):
    """The two calls rollbook makes, write_ipynb and load_notebook_node, with one endpoint variable each."""
    for name, value in s3_env(tmp_path, s3_endpoint, variable=variable).items():
        if value is None:
            monkeypatch.delenv(name, raising=False)
        else:
            monkeypatch.setenv(name, value)
    location = f"s3://{BUCKET}/{unique_key(variable)}"
    notebook = nbformat.v4.new_notebook(cells=[nbformat.v4.new_markdown_cell("a record")])

    write_ipynb(notebook, location)

    assert load_notebook_node(location).cells[0].source == "a record"


def run_with_unwritable_output(tmp_path: Path, url: str, endpoint: str, bucket: str) -> tuple[Result, str]:
    output = f"s3://{bucket}/{unique_key('lost')}"
    env = rollbook_env(tmp_path, endpoint, url)
    result = CliRunner().invoke(main, ["run", "rollback", *STAGING, "--execute", "-p", "backup_dir",
                                       str(tmp_path / "backups"), "--output", output], env=env)
    return result, output


@pytest.mark.parametrize("failure", sorted(S3_FAILURES))
def test_an_output_that_cannot_be_written_still_leaves_the_local_record(tmp_path, demo_url, s3_endpoint, failure):
    result, _ = run_with_unwritable_output(tmp_path, demo_url, *S3_FAILURES[failure](s3_endpoint))

    assert result.exit_code != 0  # the user asked for a copy that was not made
    [(_, summary_file)] = filed(tmp_path / "archive", "summary")
    [(_, record)] = filed(tmp_path / "archive", "notebook")
    assert read_record(json.loads(summary_file.read_text())).outcome == "succeeded_unverified"  # no health_url: not fully verified
    assert record_summaries(nbformat.read(record, as_version=4))[-1].outcome == "succeeded_unverified"  # no health_url: not fully verified
    assert Archive(tmp_path / "archive").verify().ok
    assert current_revision(demo_url) == ["0607bc5b8535"]


@pytest.mark.parametrize("failure", sorted(S3_FAILURES))
def test_an_output_that_cannot_be_written_is_a_clear_error(tmp_path, demo_url, s3_endpoint, failure):
    result, output = run_with_unwritable_output(tmp_path, demo_url, *S3_FAILURES[failure](s3_endpoint))

    [(_, record)] = filed(tmp_path / "archive", "notebook")
    assert isinstance(result.exception, SystemExit), repr(result.exception)
    assert result.exit_code != 0
    assert "Traceback" not in result.output
    assert output in result.output  # which copy failed
    assert record.name in result.output  # and where the record is, safe
