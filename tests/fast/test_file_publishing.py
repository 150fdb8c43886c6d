"""Publishing a written file under its final name never replaces an existing file, hard links or not."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

from rollbook.file_publishing import fsync_directory, publish_new, write_durably


def _written(folder: Path, name: str, data: bytes) -> Path:
    path = folder / name
    write_durably(path, data, mode=0o600)
    return path


@pytest.fixture(params=["hard links", "no hard links"])
def link_support(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    if request.param == "no hard links":
        def refuse(*args: object, **kwargs: object) -> None:
            raise OSError(errno.EPERM, "Operation not permitted")

        monkeypatch.setattr(os, "link", refuse)
    return str(request.param)


def test_a_free_name_is_published_with_the_content_and_mode(tmp_path: Path, link_support: str) -> None:
    temporary = _written(tmp_path, "record.part", b"content")
    target = tmp_path / "record.json"

    assert publish_new(temporary, target)
    fsync_directory(tmp_path)

    assert target.read_bytes() == b"content"
    assert target.stat().st_mode & 0o777 == 0o600
    # A hard link leaves the temporary name for the caller to remove; the fallback moves it.
    assert temporary.exists() == (link_support == "hard links")


def test_a_taken_name_is_never_replaced(tmp_path: Path, link_support: str) -> None:
    temporary = _written(tmp_path, "record.part", b"new")
    target = _written(tmp_path, "record.json", b"filed before")

    assert not publish_new(temporary, target)

    assert target.read_bytes() == b"filed before"
    assert temporary.read_bytes() == b"new"


def test_other_link_errors_are_not_hidden(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def no_space(*args: object, **kwargs: object) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "link", no_space)
    temporary = _written(tmp_path, "record.part", b"content")

    with pytest.raises(OSError, match="No space left"):
        publish_new(temporary, tmp_path / "record.json")
    assert not (tmp_path / "record.json").exists()


def test_write_durably_refuses_an_existing_file(tmp_path: Path) -> None:
    existing = _written(tmp_path, "taken", b"first")

    with pytest.raises(FileExistsError):
        write_durably(existing, b"second")
    assert existing.read_bytes() == b"first"
