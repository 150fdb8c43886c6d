"""Status: the database's revision read through rollbook's own connection, compared with the project."""

from __future__ import annotations

from alembic import command

from rollbook.pg.database import DatabaseTarget
from rollbook.project.migrations import alembic_config_for
from rollbook.project.status import read_status


def test_demo_at_head(demo_url, demo_project):
    status = read_status(DatabaseTarget.from_url(demo_url), demo_project)

    assert status.current == ("0607bc5b8536",) == status.heads
    assert status.at_head and status.pending == () and status.missing_files == ()
    assert "Current database revision:  0607bc5b8536" in status.to_text()
    assert ":***@" in status.database  # the password never leaves the URL


def test_pending_revisions_are_listed_oldest_first_with_their_files(database_url, demo_project):
    target = DatabaseTarget.from_url(database_url)
    command.upgrade(alembic_config_for(demo_project, target), "0607bc5b8533")

    status = read_status(target, demo_project)

    assert status.current == ("0607bc5b8533",) and not status.at_head
    assert [r.revision for r in status.pending] == ["0607bc5b8534", "0607bc5b8535", "0607bc5b8536"]
    first = status.to_dict()["pending"][0]
    assert first["file"] == "versions/0607bc5b8534_create_user_preferences.py"
    assert len(first["sha256"]) == 64 and first["down_revision"] == "0607bc5b8533"
