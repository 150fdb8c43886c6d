"""Small Alembic projects written by tests: a plain env.py and one line of revisions."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config

from rollbook.pg.database import DatabaseTarget, connect
from rollbook.project.migrations import MigrationProject, alembic_config_for, load_project

ENV_PY = (
    "from alembic import context\nfrom sqlalchemy import create_engine, pool\n"
    "engine = create_engine(context.config.get_main_option('sqlalchemy.url'), poolclass=pool.NullPool)\n"
    "with engine.connect() as connection:\n"
    "    context.configure(connection=connection)\n"
    "    with context.begin_transaction():\n"
    "        context.run_migrations()\n"
)


def write_project(root: Path, revisions: dict[str, tuple[str | None, str, str]]) -> Path:
    """A project under `root` whose revisions map to (down_revision, upgrade line, downgrade line); its alembic.ini."""
    (root / "versions").mkdir(parents=True)
    (root / "alembic.ini").write_text("[alembic]\nscript_location = %(here)s\npath_separator = os\n")
    (root / "env.py").write_text(ENV_PY)
    for revision, (down, upgrade, downgrade) in revisions.items():
        (root / "versions" / f"{revision}.py").write_text(
            f'"""{revision}"""\nfrom alembic import op\nrevision = "{revision}"\ndown_revision = {down!r}\n'
            f"\n\ndef upgrade():\n    {upgrade}\n\n\ndef downgrade():\n    {downgrade}\n"
        )
    return root / "alembic.ini"


def project_at_head(
    root: Path, database_url: str, revisions: dict[str, tuple[str | None, str, str]], rows: str = ""
) -> tuple[MigrationProject, DatabaseTarget, Config]:
    """A project written under `root`, its database upgraded to head and then given `rows` (SQL)."""
    project = load_project(write_project(root, revisions))
    target = DatabaseTarget.from_url(database_url)
    config = alembic_config_for(project, target)
    command.upgrade(config, "head")
    if rows:
        with connect(target) as conn:
            conn.execute(rows)
    return project, target, config
