"""The archive held to something outside its folder: a head kept elsewhere, SSH signatures, filing only known runs.

Each attack goes through the real `rollbook` command; records are filed by the library (no notebook run)
except where a real runbook's record is the point. Keys are real ed25519 keys made by ssh-keygen.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from test_archive import make_notebook, make_summary
from test_cli import ROLLBOOK

from rollbook.demo.server import DEMO_CONFIG
from rollbook.records.archive import Archive
from rollbook.records.archive_files import MANIFEST, SIGNATURES
from rollbook.records.hash_chain import entry_hash
from rollbook.records.model import read_record
from rollbook.records.signing import RecordSigning

HEAD_LINE = re.compile(r"archive head: ([0-9a-f]{64})")
IDENTITY = "alice@example.com"


def make_key(folder: Path, name: str, passphrase: str = "") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    key = folder / name
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", passphrase, "-C", name, "-f", str(key)], check=True)
    return key


def allowed_signers(path: Path, identity: str, key: Path) -> Path:
    path.write_text(f'{identity} namespaces="rollbook-record" {key.with_suffix(".pub").read_text()}')
    return path


def rollbook(cwd: Path, *args: str, archive: Path, **env: str) -> subprocess.CompletedProcess[str]:
    environment = {name: value for name, value in os.environ.items()
                   if name not in ("ROLLBOOK_SIGNING_KEY", "ROLLBOOK_ALLOWED_SIGNERS")}
    return subprocess.run([ROLLBOOK, *args], capture_output=True, text=True, timeout=120, cwd=cwd,
                          env={**environment, "ROLLBOOK_ARCHIVE": str(archive), **env})


def last_stderr_line(result: subprocess.CompletedProcess[str]) -> str:
    return result.stderr.rstrip("\n").splitlines()[-1]


def snapshot(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def file_runs(archive: Archive, count: int, first_hour: int = 10) -> list[dict]:
    """`count` runs, each filed as a summary and a notebook (two entries per run)."""
    summaries = []
    for number in range(count):
        summary = make_summary(f"2026-11-24T{first_hour + number:02d}:00:00+00:00", f"{number:06x}")
        archive.file_summary(summary)
        archive.file_notebook(make_notebook(summary), summary)
        summaries.append(summary)
    return summaries


@pytest.fixture
def keys(tmp_path: Path) -> dict[str, Path]:
    folder = tmp_path / "keys"
    alice = make_key(folder, "alice")
    return {"alice": alice, "mallory": make_key(folder, "mallory"),
            "allowed": allowed_signers(folder / "allowed_signers", IDENTITY, alice)}


@pytest.fixture
def signed(tmp_path: Path, keys: dict[str, Path]) -> Archive:
    """An archive of three runs (six entries), each entry signed with alice's key."""
    archive = Archive(tmp_path / "records", RecordSigning(keys["alice"], keys["allowed"]))
    archive.ensure_ready()
    file_runs(archive, 3)
    return archive


def checked_by(keys: dict[str, Path]) -> dict[str, str]:
    return {"ROLLBOOK_ALLOWED_SIGNERS": str(keys["allowed"])}


# -- the head ------------------------------------------------------------------------------------------------


def test_archive_add_ends_with_the_head_and_archive_head_prints_it(tmp_path: Path) -> None:
    archive = Archive(tmp_path / "records")
    assert rollbook(tmp_path, "archive", "head", archive=archive.root).returncode == 1
    summary = make_summary(outcome="running")
    archive.write_progress(read_record(summary))  # what a runbook run by plain papermill leaves before it ends
    notebook = tmp_path / "out.ipynb"
    notebook.write_bytes(make_notebook({**summary, "outcome": "dry_run"}))

    added = rollbook(tmp_path, "archive", "add", str(notebook), archive=archive.root)

    assert added.returncode == 0, added.stderr
    assert HEAD_LINE.fullmatch(last_stderr_line(added))
    head = rollbook(tmp_path, "archive", "head", archive=archive.root)
    assert head.returncode == 0 and head.stdout == f"{archive.head()}\n"
    assert last_stderr_line(added) == f"archive head: {archive.head()}"
    assert [r.kind for r in archive.records()] == ["summary", "notebook"]
    # Filing the same notebook again adds nothing, and still tells the head.
    again = rollbook(tmp_path, "archive", "add", str(notebook), archive=archive.root)
    assert again.returncode == 0 and last_stderr_line(again) == last_stderr_line(added)


def test_verify_head_fails_after_the_newest_record_and_its_manifest_line_are_deleted(signed: Archive,
                                                                                      keys: dict[str, Path]) -> None:
    tmp_path = signed.root.parent
    kept = signed.head()
    lines = signed.manifest_path.read_text().splitlines()
    newest = json.loads(lines[-1])
    (signed.root / newest["file"]).unlink()
    (signed.root / SIGNATURES / f"{newest['seq']}.sig").unlink()
    signed.manifest_path.write_text("".join(line + "\n" for line in lines[:-1]))

    # The rest is intact and signed: without the head kept elsewhere nothing shows, and verify says so.
    plain = rollbook(tmp_path, "archive", "verify", archive=signed.root, **checked_by(keys))
    assert plain.returncode == 0, plain.stdout
    assert "Only a head kept outside this folder shows newer entries removed" in plain.stdout

    verify = rollbook(tmp_path, "archive", "verify", "--head", kept, archive=signed.root, **checked_by(keys))

    assert verify.returncode == 1
    assert f"the head {kept} is not an entry of this archive's chain (its head is now entry #5" in verify.stdout
    assert "truncated" in verify.stdout and "Traceback" not in verify.stderr


def test_verify_head_names_the_entry_a_kept_head_is_and_how_many_came_after(signed: Archive) -> None:
    entries = [json.loads(line) for line in signed.manifest_path.read_text().splitlines()]
    tmp_path = signed.root.parent

    older = rollbook(tmp_path, "archive", "verify", "--head", entries[3]["entry_hash"].upper(), archive=signed.root)
    newest = rollbook(tmp_path, "archive", "verify", "--head", entries[-1]["entry_hash"], archive=signed.root)
    malformed = rollbook(tmp_path, "archive", "verify", "--head", "abc123", archive=signed.root)

    assert older.returncode == 0, older.stdout
    assert f"Head given: {entries[3]['entry_hash']} is entry #4 ({entries[3]['file']}); 2 entries were filed " \
           "after it." in older.stdout
    assert newest.returncode == 0 and "is entry #6" in newest.stdout and "it is the newest entry" in newest.stdout
    assert malformed.returncode == 2 and "64 hexadecimal characters" in malformed.stderr
    assert "Traceback" not in malformed.stderr


def test_verify_head_fails_when_the_folder_is_swapped_for_an_older_copy(signed: Archive) -> None:
    tmp_path = signed.root.parent
    older_copy = tmp_path / "copy-of-yesterday"
    shutil.copytree(signed.root, older_copy)
    file_runs(signed, 1, first_hour=20)
    kept = signed.head()
    shutil.rmtree(signed.root)
    older_copy.rename(signed.root)

    verify = rollbook(tmp_path, "archive", "verify", "--head", kept, archive=signed.root)

    assert verify.returncode == 1
    assert f"the head {kept} is not an entry of this archive's chain" in verify.stdout
    assert "replaced by another copy" in verify.stdout


def test_verify_fails_on_an_emptied_archive_and_on_a_missing_one(signed: Archive) -> None:
    tmp_path = signed.root.parent
    for child in signed.root.iterdir():
        shutil.rmtree(child) if child.is_dir() else child.unlink()

    emptied = rollbook(tmp_path, "archive", "verify", archive=signed.root)
    missing = rollbook(tmp_path, "archive", "verify", archive=tmp_path / "no-such-folder")

    assert emptied.returncode == 1
    assert f"no record is filed in {signed.root}" in emptied.stdout and "emptied" in emptied.stdout
    assert missing.returncode == 1
    assert f"there is no archive folder at {tmp_path / 'no-such-folder'}" in missing.stdout
    assert "ROLLBOOK_ARCHIVE" in missing.stdout
    assert not (tmp_path / "no-such-folder").exists()


# -- signatures ----------------------------------------------------------------------------------------------


def rechain(archive: Archive, edit_seq: int) -> None:
    """What anyone can do with the documented format: edit a record, then recompute every sha256 and hash."""
    entries = [json.loads(line) for line in archive.manifest_path.read_text().splitlines()]
    record = archive.root / entries[edit_seq - 1]["file"]
    original = record.read_text()
    record.write_text(original.replace('"succeeded"', '"refused"'))
    assert record.read_text() != original
    previous = None
    for entry in entries:
        if entry["seq"] >= edit_seq:
            entry["sha256"] = hashlib.sha256((archive.root / entry["file"]).read_bytes()).hexdigest()
            entry["prev"] = previous["entry_hash"] if previous else entry["prev"]
            entry["entry_hash"] = entry_hash(entry)
        previous = entry
    archive.manifest_path.write_text("".join(json.dumps(e, sort_keys=True, separators=(",", ":")) + "\n"
                                             for e in entries))


def test_a_record_edited_and_rechained_with_sha256_fails_the_signature_check(signed: Archive,
                                                                              keys: dict[str, Path]) -> None:
    tmp_path = signed.root.parent
    rechain(signed, edit_seq=3)

    unchecked = rollbook(tmp_path, "archive", "verify", archive=signed.root)
    checked = rollbook(tmp_path, "archive", "verify", archive=signed.root, **checked_by(keys))

    # The hashes agree again: without the allowed signers, verify cannot tell, and does not claim to.
    assert unchecked.returncode == 0, unchecked.stdout
    assert "Signatures: not checked: no allowed signers file is configured" in unchecked.stdout
    assert "6 of 6 entries carry a signature" in unchecked.stdout
    assert checked.returncode == 1
    problems = [line for line in checked.stdout.splitlines() if line.startswith("- ")]
    assert len(problems) == 4  # the edited entry and every entry re-chained after it
    assert problems[0].startswith("- entry #3 (") and "its signature does not match the entry" in problems[0]
    assert all("entry #1 " not in p and "entry #2 " not in p for p in problems)


def test_rechained_entries_resigned_with_another_key_or_unsigned_are_named(signed: Archive,
                                                                            keys: dict[str, Path]) -> None:
    tmp_path = signed.root.parent
    rechain(signed, edit_seq=5)
    lines = signed.manifest_path.read_bytes().splitlines(keepends=True)
    # Mallory re-signs entry #5 with her own key, and deletes the signature of entry #6.
    resigned = subprocess.run(["ssh-keygen", "-Y", "sign", "-f", str(keys["mallory"]), "-n", "rollbook-record"],
                              input=lines[4], capture_output=True, check=True).stdout
    (signed.root / SIGNATURES / "5.sig").write_bytes(resigned)
    (signed.root / SIGNATURES / "6.sig").unlink()

    checked = rollbook(tmp_path, "archive", "verify", archive=signed.root, **checked_by(keys))

    assert checked.returncode == 1
    assert f"is signed by a key that is not in {keys['allowed']}" in checked.stdout
    assert "entry #6 (" in checked.stdout and "is not signed" in checked.stdout
    assert "4 of 6 entries carry a good signature" in checked.stdout


def test_a_clean_signed_archive_verifies_and_says_by_whom(signed: Archive, keys: dict[str, Path]) -> None:
    verify = rollbook(signed.root.parent, "archive", "verify", archive=signed.root, **checked_by(keys))
    assert verify.returncode == 0, verify.stdout
    assert f"6 of 6 entries carry a good signature by a key of {keys['allowed']} ({IDENTITY}: 6)" in verify.stdout


def test_an_unsigned_archive_fails_when_signatures_are_required(tmp_path: Path, keys: dict[str, Path]) -> None:
    archive = Archive(tmp_path / "records")
    file_runs(archive, 1)
    verify = rollbook(tmp_path, "archive", "verify", archive=archive.root, **checked_by(keys))
    assert verify.returncode == 1
    assert verify.stdout.count("is not signed: it was filed without a signing key") == 2


RECORDS_PAGE = Path(__file__).parent.parent / "docs" / "records.md"


def auditor_script(allowed: Path, head: str) -> str:
    """The commands docs/records.md gives an auditor, with the file and head filled in."""
    page = RECORDS_PAGE.read_text()
    section = page[page.index("## Check the archive without rollbook"):]
    script = re.search(r"```bash\n(.*?)```", section, re.S).group(1)
    script = re.sub(r"^ALLOWED=.*$", f"ALLOWED={allowed}", script, count=1, flags=re.M)
    return re.sub(r"^HEAD=.*$", f"HEAD={head}", script, count=1, flags=re.M)


def test_a_real_run_is_signed_through_rollbook_toml_and_an_auditor_checks_it_with_plain_ssh_keygen(
    tmp_path: Path, keys: dict[str, Path], demo_url: str,
) -> None:
    project = tmp_path / "project"
    project.mkdir()
    shutil.copy(keys["alice"], project / "rollbook-signing")
    (project / "rollbook.toml").write_text('[archive]\nsigning_key = "rollbook-signing"\n'
                                           f'allowed_signers = "{keys["allowed"]}"\n')
    archive = tmp_path / "rollback-records"  # the folder the auditor's commands name

    run = rollbook(project, "run", "status", archive=archive, DATABASE_URL=demo_url, ALEMBIC_CONFIG=str(DEMO_CONFIG))

    assert run.returncode == 0, run.stdout + run.stderr
    head = HEAD_LINE.fullmatch(last_stderr_line(run)).group(1)
    assert head == Archive(archive).head()
    verify = rollbook(project, "archive", "verify", "--head", head, archive=archive)
    assert verify.returncode == 0, verify.stdout
    assert f"2 of 2 entries carry a good signature by a key of {keys['allowed']} ({IDENTITY}: 2)" in verify.stdout
    assert "it is the newest entry" in verify.stdout
    # The commands docs/records.md gives an auditor: stock OpenSSH and coreutils, no rollbook.
    auditor = subprocess.run(["bash", "-c", auditor_script(keys["allowed"], head)], capture_output=True, text=True,
                             timeout=60, cwd=tmp_path, env={"PATH": os.environ["PATH"]})
    assert auditor.returncode == 0, auditor.stdout + auditor.stderr
    said = auditor.stdout + auditor.stderr
    assert said.count(f'Good "rollbook-record" signature for {IDENTITY}') == 2
    assert said.count(": OK") == 2 and "does not chain" not in said
    assert auditor.stdout.splitlines()[0] == "2"  # the head's line: the newest
    # The same commands catch a re-chained record and a head that is no longer in the chain.
    rechain(Archive(archive), edit_seq=2)
    tampered = subprocess.run(["bash", "-c", auditor_script(keys["allowed"], head)], capture_output=True,
                              text=True, timeout=60, cwd=tmp_path, env={"PATH": os.environ["PATH"]})
    assert tampered.returncode != 0 and tampered.stdout == ""
    rest = auditor_script(keys["allowed"], Archive(archive).head())
    resigned = subprocess.run(["bash", "-c", rest], capture_output=True, text=True, timeout=60, cwd=tmp_path,
                              env={"PATH": os.environ["PATH"]})
    assert resigned.returncode != 0 and "Signature verification failed" in resigned.stdout + resigned.stderr


# -- refusing before anything runs ---------------------------------------------------------------------------


def test_a_signing_key_that_cannot_sign_stops_rollbook_run_before_the_database_is_touched(
    tmp_path: Path, keys: dict[str, Path],
) -> None:
    # A database nobody listens on: touching it would exit 3, not 2.
    nowhere = "postgresql+psycopg://app@127.0.0.1:9/app"
    archive = tmp_path / "records"
    locked = make_key(tmp_path / "keys", "locked", passphrase="secret phrase")
    no_tools = tmp_path / "empty-bin"
    no_tools.mkdir()
    cases = {
        "missing key": ({"ROLLBOOK_SIGNING_KEY": str(tmp_path / "no-such-key")}, "does not exist"),
        "passphrase, no agent": ({"ROLLBOOK_SIGNING_KEY": str(locked), "SSH_AUTH_SOCK": ""}, "cannot sign"),
        "no ssh-keygen": ({"ROLLBOOK_SIGNING_KEY": str(keys["alice"]), "PATH": str(no_tools)},
                          "ssh-keygen (OpenSSH 8.2 or newer) is not installed"),
    }
    for name, (env, says) in cases.items():
        run = rollbook(tmp_path, "run", "status", archive=archive, DATABASE_URL=nowhere, **env)
        assert run.returncode == 2, (name, run.stdout, run.stderr)
        assert says in run.stderr and "nothing was started" in run.stderr, name
        assert "Traceback" not in run.stderr and "secret phrase" not in run.stderr, name
        assert "archive head" not in run.stderr, name
    assert not list(archive.glob("*.json")) and not list(archive.glob("*.ipynb"))


# -- archive add ---------------------------------------------------------------------------------------------


def test_archive_add_refuses_a_made_up_notebook_and_leaves_the_archive_untouched(signed: Archive) -> None:
    tmp_path = signed.root.parent
    before = snapshot(signed.root)
    forged = make_summary("2026-11-25T09:00:00+00:00", "f0f0f0", environment="production", approved_by="cto")
    made_up = tmp_path / "made-up.ipynb"
    made_up.write_bytes(make_notebook(forged))
    no_record = tmp_path / "no-record.ipynb"
    no_record.write_text('{"cells": [], "metadata": {}, "nbformat": 4, "nbformat_minor": 5}')

    refused = rollbook(tmp_path, "archive", "add", str(made_up), archive=signed.root)
    unrecorded = rollbook(tmp_path, "archive", "add", str(no_record), archive=signed.root)

    assert refused.returncode == 2
    assert f"records run {forged['run_id']}, which no runbook of the archive {signed.root} started" in refused.stderr
    assert "Nothing was filed" in refused.stderr and "Traceback" not in refused.stderr
    assert "archive head" not in refused.stderr
    assert unrecorded.returncode == 2 and "carries no rollbook record" in unrecorded.stderr
    assert snapshot(signed.root) == before
    assert MANIFEST in before
