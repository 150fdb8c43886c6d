"""The memo of site files scanned clean of secrets: same bytes, same scanner, not scanned again."""

from __future__ import annotations

from pathlib import Path

from rollbook.website.clean_scans import MEMO_FILE, CleanScans


def test_bytes_found_clean_are_remembered_for_the_next_build_and_anything_else_is_not(tmp_path: Path) -> None:
    first = CleanScans.load(tmp_path)
    known, digest = first.known_clean(b"<p>a page</p>")
    assert not known
    first.add(digest)
    first.save()

    second = CleanScans.load(tmp_path)

    assert second.known_clean(b"<p>a page</p>")[0]
    assert not second.known_clean(b"<p>a page, changed</p>")[0]
    second.save()  # what this build saw is kept, though it was found clean before
    assert CleanScans.load(tmp_path).known_clean(b"<p>a page</p>")[0]


def test_a_memo_of_another_scanner_is_not_trusted(tmp_path: Path) -> None:
    memo = CleanScans.load(tmp_path)
    memo.add(memo.known_clean(b"page")[1])
    memo.save()
    lines = (tmp_path / MEMO_FILE).read_text().splitlines()
    (tmp_path / MEMO_FILE).write_text("\n".join(["rollbook 0.0.1 connection_secrets 0", *lines[1:]]) + "\n")

    assert not CleanScans.load(tmp_path).known_clean(b"page")[0]


def test_without_a_folder_nothing_is_kept(tmp_path: Path) -> None:
    memo = CleanScans.load(None)
    memo.add(memo.known_clean(b"page")[1])
    memo.save()

    assert memo.known_clean(b"page")[0] and not list(tmp_path.iterdir())
