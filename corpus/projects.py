"""The real migration histories of the corpus: how each project is installed, migrated and given rows.

Each entry says what a user of that project does: the package installed from PyPI, where its
alembic.ini is, the command its users run to bring a database to head, rows written the way the
project writes them, and what rollbook needs configured for it (`alembic_x_args`, settings).
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class CorpusProject:
    """One real project whose Alembic history the corpus plans, rolls back and rehearses."""

    name: str
    requirement: str
    # Python run in the project's virtualenv that prints the path of its alembic.ini.
    locate_config: str
    # The command its users run to migrate a new database to head: {url} is a SQLAlchemy URL with the
    # project's own driver, {libpq_url} a plain postgresql:// URL; run in the project's virtualenv.
    upgrade: tuple[str, ...]
    upgrade_env: dict[str, str] = field(default_factory=dict)
    # The driver the project's own URL names (postgresql+asyncpg, postgresql+psycopg2, ...).
    driver: str = "postgresql+psycopg"
    # SQL that writes realistic rows after the upgrade, so live counts and the rehearsal mean something.
    seed_sql: tuple[str, ...] = ()
    extensions: tuple[str, ...] = ()
    # What a user must configure for rollbook (shown in the corpus README).
    user_notes: str = ""
    extra_requirements: tuple[str, ...] = ()
    # Python printing the folder rollbook runs in, for an alembic.ini whose script_location is relative
    # to the current folder (as the project's own code runs Alembic); empty: the project's work folder.
    run_from: str = ""


PROJECTS: tuple[CorpusProject, ...] = (
    CorpusProject(
        name="prefect",
        requirement="prefect==3.9.1",
        locate_config=("import prefect, pathlib; "
                       "print(pathlib.Path(prefect.__file__).parent / 'server' / 'database' / 'alembic.ini')"),
        upgrade=("prefect", "server", "database", "upgrade", "-y"),
        upgrade_env={"PREFECT_API_DATABASE_CONNECTION_URL": "{url}", "PREFECT_HOME": "{work}/prefect-home"},
        driver="postgresql+asyncpg",
        extensions=("pg_trgm",),
        seed_sql=(
            "INSERT INTO flow (id, name) SELECT gen_random_uuid(), 'flow-' || g FROM generate_series(1, 20) g",
            "INSERT INTO flow_run (id, name, flow_id, state_type, state_name) "
            "SELECT gen_random_uuid(), 'run-' || g, (SELECT id FROM flow ORDER BY name LIMIT 1), 'COMPLETED', "
            "'Completed' FROM generate_series(1, 200) g",
        ),
        user_notes=("async env.py (asyncpg); migrations in versions/postgresql, set at run time by env.py; "
                    "needs pg_trgm"),
    ),
    CorpusProject(
        name="mlflow",
        requirement="mlflow-skinny==3.17.0",
        extra_requirements=("psycopg2-binary",),
        locate_config=("import mlflow, pathlib; "
                       "print(pathlib.Path(mlflow.__file__).parent / 'store' / 'db_migrations' / 'alembic.ini')"),
        upgrade=("mlflow", "db", "upgrade", "{url}"),
        driver="postgresql+psycopg2",
        seed_sql=(
            "INSERT INTO experiments (name, artifact_location, lifecycle_stage, creation_time, last_update_time) "
            "SELECT 'exp-' || g, '/tmp/a' || g, 'active', 0, 0 FROM generate_series(1, 10) g",
            "INSERT INTO runs (run_uuid, name, source_type, source_name, entry_point_name, user_id, status, "
            "start_time, end_time, source_version, lifecycle_stage, artifact_uri, experiment_id) "
            "SELECT md5(g::text), 'run-' || g, 'LOCAL', 's', 'main', 'u', 'FINISHED', 0, 1, 'v', 'active', '/tmp/r', "
            "(SELECT min(experiment_id) FROM experiments) FROM generate_series(1, 100) g",
            "INSERT INTO metrics (key, value, timestamp, run_uuid, step, is_nan) "
            "SELECT 'loss', random(), g, md5((g % 100 + 1)::text), g, false FROM generate_series(1, 1000) g",
        ),
        run_from="import mlflow, pathlib; print(pathlib.Path(mlflow.__file__).parent.parent)",
        user_notes=("base tables come from metadata.create_all before the first revision (a starting schema "
                    "is needed to rebuild targets); alembic.ini's script_location is relative: run rollbook from "
                    "the folder that holds the mlflow package"),
    ),
)
