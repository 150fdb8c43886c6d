"""SSH signatures of the archive's manifest entries, made and checked with OpenSSH's ssh-keygen.

A sha256 chain in the archive folder can be recomputed by anyone who can write the folder; a signature
cannot be made without the signing key. rollbook signs each manifest line (the entry as it is written,
with its trailing newline): the line holds the record's sha256 and the previous entry's hash, so one
signature covers the record's bytes and its place in the chain. It uses `ssh-keygen -Y sign`, as git
signs commits, because teams already keep SSH keys (and ssh-agent), and an auditor checks a signature
with stock OpenSSH and the allowed signers file, without rollbook.

Settings, each from the environment first, else from the `[archive]` table of rollbook.toml (or
`[tool.rollbook.archive]` of pyproject.toml) found from the current folder upwards:

- `ROLLBOOK_SIGNING_KEY` / `signing_key`: the private key, or the public key of a key held by ssh-agent;
- `ROLLBOOK_ALLOWED_SIGNERS` / `allowed_signers`: the keys whose signatures `verify` accepts, in the
  format of ssh-keygen's ALLOWED SIGNERS (as git's gpg.ssh.allowedSignersFile).

Paths in the settings file are relative to that file's folder.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from rollbook.errors import BadInput, RollbookError
from rollbook.outcomes import Outcome
from rollbook.project_config import SettingsFile, find_settings

NAMESPACE = "rollbook-record"
SIGNING_KEY_VARIABLE = "ROLLBOOK_SIGNING_KEY"
ALLOWED_SIGNERS_VARIABLE = "ROLLBOOK_ALLOWED_SIGNERS"
SETTINGS_TABLE = "archive"
SSH_KEYGEN_SECONDS = 30
_PROBE = b"rollbook: can this key sign?\n"

SignatureStatus = Literal["good", "bad", "unknown signer", "not checked"]


class SigningUnavailable(RollbookError):
    """Records are to be signed, but they cannot be: no ssh-keygen, or a key that is missing or cannot sign."""

    outcome = Outcome.BAD_INPUT


@dataclass(frozen=True)
class SignatureCheck:
    """What checking one signature found: good (and by whom), bad, an unknown signer, or not checked."""

    status: SignatureStatus
    signer: str | None = None
    detail: str = ""


@dataclass(frozen=True)
class RecordSigning:
    """Where the signing key and the allowed signers file are; either may be absent."""

    key: Path | None = None
    allowed_signers: Path | None = None

    @classmethod
    def configured(cls, environ: Mapping[str, str] | None = None, start: Path | None = None) -> RecordSigning:
        """The settings from the environment, else from the settings file found from `start` (the current folder)."""
        environ = os.environ if environ is None else environ
        settings = find_settings(start or Path.cwd())
        return cls(
            key=_setting(environ, SIGNING_KEY_VARIABLE, settings, "signing_key"),
            allowed_signers=_setting(environ, ALLOWED_SIGNERS_VARIABLE, settings, "allowed_signers"),
        )

    def ensure_can_sign(self) -> None:
        """With a signing key configured, prove it signs (a probe message), so a run refuses before it starts."""
        if self.key is not None:
            self.sign(_PROBE)

    def sign(self, message: bytes) -> bytes:
        """The SSH signature (armored, namespace rollbook-record) of `message` with the configured key."""
        if self.key is None:
            raise SigningUnavailable("No signing key is configured: set ROLLBOOK_SIGNING_KEY or `signing_key` in "
                                     "the [archive] table of rollbook.toml.")
        if not self.key.is_file():
            raise SigningUnavailable(
                f"The signing key {self.key} does not exist. Records are signed with it, so nothing was started "
                f"and the database was not touched. Set {SIGNING_KEY_VARIABLE} (or `signing_key` in [archive] of "
                "rollbook.toml) to an SSH private key, or to the public key of one loaded in ssh-agent."
            )
        signed = _ssh_keygen(["-Y", "sign", "-f", str(self.key), "-n", NAMESPACE], message)
        if signed.returncode != 0 or not signed.stdout.startswith(b"-----BEGIN SSH SIGNATURE-----"):
            raise SigningUnavailable(
                f"The key {self.key} cannot sign ({_first_line(signed.stderr) or 'ssh-keygen gave no signature'}). "
                "Records are signed with it, so nothing was started and the database was not touched. Use a key "
                "without a passphrase, or load it into ssh-agent (ssh-add) and name its public key."
            )
        return signed.stdout

    def check(self, message: bytes, signature: bytes) -> SignatureCheck:
        """Check `signature` of `message` against the allowed signers file, as an auditor's ssh-keygen would."""
        if self.allowed_signers is None:
            return SignatureCheck("not checked", detail="no allowed signers file is configured")
        if not self.allowed_signers.is_file():
            raise BadInput(f"The allowed signers file {self.allowed_signers} does not exist. Set "
                           f"{ALLOWED_SIGNERS_VARIABLE} (or `allowed_signers` in [archive] of rollbook.toml) to the "
                           "file of the keys allowed to sign records, or unset it to skip the signature check.")
        with tempfile.TemporaryDirectory(prefix="rollbook-signature-") as folder:
            signature_file = Path(folder) / "entry.sig"
            signature_file.write_bytes(signature)
            found = _ssh_keygen(["-Y", "find-principals", "-s", str(signature_file), "-f",
                                 str(self.allowed_signers)], b"")
            principals = found.stdout.decode(errors="replace").split()
            if found.returncode != 0 or not principals:
                # Either a valid signature by a key not allowed, or no valid signature at all.
                valid = _ssh_keygen(["-Y", "check-novalidate", "-n", NAMESPACE, "-s", str(signature_file)], message)
                if valid.returncode == 0:
                    return SignatureCheck("unknown signer", detail="signed by a key that is not in "
                                          f"{self.allowed_signers}")
                return SignatureCheck("bad", detail="the signature does not match the entry")
            verified = _ssh_keygen(["-Y", "verify", "-f", str(self.allowed_signers), "-I", principals[0], "-n",
                                    NAMESPACE, "-s", str(signature_file)], message)
        if verified.returncode != 0:
            return SignatureCheck("bad", principals[0], "the signature does not match the entry")
        return SignatureCheck("good", principals[0])


def _setting(environ: Mapping[str, str], variable: str, settings: SettingsFile | None, key: str) -> Path | None:
    if environ.get(variable):
        return Path(environ[variable]).expanduser()
    if settings is None:
        return None
    table = settings.table.get(SETTINGS_TABLE, {})
    if not isinstance(table, dict):
        raise BadInput(f"{settings.path}: {settings.section(SETTINGS_TABLE)} must be a table. Fix the file and "
                       "retry.")
    value = table.get(key)
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise BadInput(f"{settings.path}: `{key}` in {settings.section(SETTINGS_TABLE)} must be a path (a string). "
                       "Fix the file and retry.")
    return settings.path.parent / Path(value).expanduser()


def _ssh_keygen(arguments: list[str], message: bytes) -> subprocess.CompletedProcess[bytes]:
    program = shutil.which("ssh-keygen")
    if program is None:
        raise SigningUnavailable("ssh-keygen (OpenSSH 8.2 or newer) is not installed or not on PATH; rollbook signs "
                                 "and checks records with it. Install OpenSSH's client tools (apt install "
                                 "openssh-client) and retry; nothing was started.")
    try:
        # Its own session: without a controlling terminal, a key with a passphrase fails at once instead of
        # prompting in the middle of a run.
        return subprocess.run([program, *arguments], input=message, capture_output=True, start_new_session=True,
                              timeout=SSH_KEYGEN_SECONDS, check=False)
    except subprocess.TimeoutExpired:
        raise SigningUnavailable(f"ssh-keygen did not answer within {SSH_KEYGEN_SECONDS} s (is ssh-agent "
                                 "responding?). Nothing was started; check the agent and retry.") from None


def _first_line(data: bytes) -> str:
    lines = [line.strip() for line in data.decode(errors="replace").splitlines() if line.strip()]
    return next((line for line in lines if not line.startswith("Enter passphrase")), lines[0] if lines else "")
