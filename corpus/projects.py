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
    # Python run in the project's virtualenv that prints the path of the alembic.ini to use ({work}: the
    # project's work folder, where a copy with the settings a user adds may be written).
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
    # rollbook.toml written next to the alembic.ini copy in the work folder: what a user of the project sets.
    settings: str = ""
    # The targets of `plan --json` and of the staging rollback: a history with several heads (expand and contract
    # branches) is rolled back one branch at a time, so its users name the branch (`contract@-1`).
    plan_target: str = "base"
    rollback_target: str = "-3"


PROJECTS: tuple[CorpusProject, ...] = (
    CorpusProject(
        name="prefect",
        requirement="prefect==3.9.1",
        # Prefect's env.py sets version_locations from its ORM at run time (versions/postgresql or
        # versions/sqlite): a user copies the packaged alembic.ini and names the PostgreSQL folder.
        locate_config=(
            "import configparser, pathlib, prefect; database = pathlib.Path(prefect.__file__).parent / 'server' / "
            "'database'; ini = configparser.ConfigParser(interpolation=None); ini.read(database / 'alembic.ini'); "
            "ini['alembic']['version_locations'] = str(database / '_migrations' / 'versions' / 'postgresql'); "
            "out = pathlib.Path('{work}') / 'alembic.ini'; ini.write(out.open('w')); print(out)"),
        upgrade=("prefect", "server", "database", "upgrade", "-y"),
        upgrade_env={"PREFECT_API_DATABASE_CONNECTION_URL": "{url}", "PREFECT_HOME": "{work}/prefect-home"},
        driver="postgresql+asyncpg",
        extensions=("pg_trgm",),
        settings='[project]\ntarget_metadata = "prefect.server.database.orm_models:Base.metadata"\n',
        seed_sql=(
            "INSERT INTO flow (id, name) SELECT gen_random_uuid(), 'flow-' || g FROM generate_series(1, 20) g",
            "INSERT INTO flow_run (id, name, flow_id, state_type, state_name) "
            "SELECT gen_random_uuid(), 'run-' || g, (SELECT id FROM flow ORDER BY name LIMIT 1), 'COMPLETED', "
            "'Completed' FROM generate_series(1, 200) g",
        ),
        user_notes=("a copy of the packaged alembic.ini with `version_locations` naming versions/postgresql "
                    "(env.py sets it at run time from its ORM); `target_metadata = "
                    "\"prefect.server.database.orm_models:Base.metadata\"` for its naming convention; async env.py "
                    "under asyncpg; needs pg_trgm"),
    ),
    CorpusProject(
        name="mlflow",
        requirement="mlflow-skinny==3.17.0",
        extra_requirements=("psycopg2-binary",),
        # The packaged alembic.ini's script_location is relative to the current folder (MLflow runs Alembic
        # from its own code): a user copies it and names the folder.
        locate_config=(
            "import configparser, pathlib, mlflow; migrations = pathlib.Path(mlflow.__file__).parent / 'store' / "
            "'db_migrations'; ini = configparser.ConfigParser(interpolation=None); "
            "ini.read(migrations / 'alembic.ini'); ini['alembic']['script_location'] = str(migrations); "
            "out = pathlib.Path('{work}') / 'alembic.ini'; ini.write(out.open('w')); print(out)"),
        upgrade=("mlflow", "db", "upgrade", "{url}"),
        driver="postgresql+psycopg2",
        settings='[project]\nbase_schema = "mlflow.store.tracking.dbmodels.initial_models:Base"\n',
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
        user_notes=("a copy of the packaged alembic.ini with an absolute script_location (it is relative to the "
                    "current folder); `base_schema = \"mlflow.store.tracking.dbmodels.initial_models:Base\"` "
                    "(its base tables come from create_all)"),
    ),
    CorpusProject(
        name="buildbot",
        requirement="buildbot==4.3.0",
        extra_requirements=("psycopg2-binary",),
        # The packaged alembic.ini names its folders with %(here)s: a user copies it next to a rollbook.toml
        # and names the folders absolutely.
        locate_config=(
            "import configparser, pathlib, buildbot.db; migrations = pathlib.Path(buildbot.db.__file__).parent / "
            "'migrations'; ini = configparser.ConfigParser(interpolation=None); ini.read(migrations / 'alembic.ini'); "
            "ini['alembic']['script_location'] = str(migrations); "
            "ini['alembic']['version_locations'] = str(migrations / 'versions'); "
            "out = pathlib.Path('{work}') / 'alembic.ini'; ini.write(out.open('w')); "
            # Buildbot makes a new database with create_all of its current model and stamps it at head; its
            # first revision (059) is an empty placeholder for databases that came from sqlalchemy-migrate. The
            # schema at 059 is the current model less what 060-067 add: a user writes it once as base_schema.
            "import sqlalchemy as sa; from buildbot.db.model import Model; ddl = []; "
            "engine = sa.create_mock_engine('postgresql+psycopg2://', "
            "lambda statement, *a, **k: ddl.append(str(statement.compile(dialect=engine.dialect)).strip() + ';')); "
            "Model.metadata.create_all(engine, checkfirst=False); ddl += ["
            "'DROP TABLE codebase_branches, codebase_commits, codebases;', "
            "'ALTER TABLE builds DROP COLUMN locks_duration_s;', "
            "'ALTER TABLE buildsets DROP COLUMN rebuilt_buildid;', "
            "'ALTER TABLE workers DROP COLUMN pause_reason;', "
            "'ALTER TABLE steps DROP COLUMN locks_acquired_at;', "
            "'ALTER TABLE builders DROP COLUMN projectid, DROP COLUMN description_format, "
            "DROP COLUMN description_html;', 'DROP TABLE projects;']; "
            "(out.parent / 'base_schema_059.sql').write_text(chr(10).join(ddl) + chr(10)); print(out)"),
        # A new master: `buildbot create-master --db URL` makes the database (create_all of the current model,
        # stamped at head), master.cfg is written from the sample, and `buildbot upgrade-master` is what
        # users run after each Buildbot upgrade.
        upgrade=("sh", "-c", "rm -rf '{work}/master' && buildbot create-master --db '{url}' '{work}/master' && "
                 "cp '{work}/master/master.cfg.sample' '{work}/master/master.cfg' && "
                 "buildbot upgrade-master '{work}/master'"),
        driver="postgresql+psycopg2",
        settings='[project]\nbase_schema = "base_schema_059.sql"\n',
        seed_sql=(
            "INSERT INTO masters (name, name_hash, active, last_active) VALUES ('ci:/srv/master', md5('ci'), 1, 0)",
            "INSERT INTO projects (name, name_hash, slug, description, description_format) "
            "SELECT 'project-' || g, md5('project-' || g), 'project-' || g, 'about ' || g, 'markdown' "
            "FROM generate_series(1, 3) g",
            "INSERT INTO builders (name, name_hash, description, description_format, projectid) "
            "SELECT 'builder-' || g, md5('builder-' || g), 'builds ' || g, 'markdown', "
            "(SELECT min(id) FROM projects) FROM generate_series(1, 5) g",
            "INSERT INTO workers (name, info, paused, pause_reason) "
            "SELECT 'worker-' || g, '{}', (g % 2), CASE WHEN g % 2 = 1 THEN 'maintenance' END "
            "FROM generate_series(1, 5) g",
            "INSERT INTO buildsets (reason, submitted_at, complete, results) "
            "SELECT 'push ' || g, 1700000000 + g, 1, 0 FROM generate_series(1, 20) g",
            "INSERT INTO buildrequests (buildsetid, builderid, submitted_at, complete, results) "
            "SELECT id, (SELECT min(id) FROM builders), submitted_at, 1, 0 FROM buildsets",
            "INSERT INTO builds (number, builderid, buildrequestid, masterid, started_at, complete_at, "
            "locks_duration_s, state_string, results) "
            "SELECT row_number() OVER (ORDER BY id), builderid, id, (SELECT min(id) FROM masters), "
            "submitted_at, submitted_at + 60, 3, 'finished', 0 FROM buildrequests",
            "UPDATE buildsets SET rebuilt_buildid = (SELECT min(id) FROM builds) WHERE id % 4 = 0",
            "INSERT INTO steps (number, name, buildid, started_at, locks_acquired_at, complete_at, state_string, "
            "results, urls_json) SELECT s, 'step-' || s, b.id, b.started_at + s, b.started_at + s + 1, "
            "b.started_at + s + 5, 'done', 0, '[]' FROM builds b, generate_series(1, 5) s",
            "INSERT INTO codebases (projectid, name, name_hash, slug) "
            "SELECT (SELECT min(id) FROM projects), 'codebase-' || g, md5('codebase-' || g), 'codebase-' || g "
            "FROM generate_series(1, 2) g",
            "INSERT INTO codebase_commits (codebaseid, author, comments, when_timestamp, revision) "
            "SELECT (SELECT min(id) FROM codebases), 'dev', 'commit ' || g, 1700000000 + g, md5(g::text) "
            "FROM generate_series(1, 20) g",
            "INSERT INTO codebase_branches (codebaseid, name, name_hash, commitid, last_timestamp) "
            "SELECT (SELECT min(id) FROM codebases), 'main', md5('main'), (SELECT max(id) FROM codebase_commits), "
            "1700000020",
        ),
        user_notes=("a copy of the packaged alembic.ini with absolute script_location and version_locations "
                    "(they use %(here)s); `base_schema` naming a SQL file of the schema at 059 (a new database is "
                    "create_all of the current model stamped at head, and 060 needs its tables): the current "
                    "model's DDL less what 060-067 add; `DATABASE_URL=postgresql+psycopg2://...`; run rollbook "
                    "in Buildbot's environment"),
    ),
    CorpusProject(
        name="dagster-postgres",
        requirement="dagster-postgres==0.29.27",
        # The packaged alembic.ini (dagster_postgres/alembic) names its scripts as a package path
        # (dagster:_core/storage/alembic): a user copies it next to a rollbook.toml.
        locate_config=(
            "import pathlib, shutil, dagster_postgres; ini = pathlib.Path(dagster_postgres.__file__).parent / "
            "'alembic' / 'alembic.ini'; out = pathlib.Path('{work}') / 'alembic.ini'; shutil.copy(ini, out); "
            "print(out)"),
        # A postgres-backed instance: dagster.yaml in DAGSTER_HOME names the database for the run, event log
        # and schedule storages; `dagster instance migrate` creates their tables (create_all, stamped at head)
        # and brings an older database to head.
        upgrade=("sh", "-c", "mkdir -p '{work}/dagster-home' && printf 'storage:\\n  postgres:\\n    "
                 "postgres_url: {libpq_url}\\n' > '{work}/dagster-home/dagster.yaml' && "
                 "dagster instance migrate"),
        upgrade_env={"DAGSTER_HOME": "{work}/dagster-home"},
        driver="postgresql+psycopg2",
        seed_sql=(
            "INSERT INTO snapshots (snapshot_id, snapshot_body, snapshot_type) "
            "SELECT md5('snap' || g), convert_to('{}', 'UTF8'), 'PIPELINE' FROM generate_series(1, 3) g",
            "INSERT INTO runs (run_id, snapshot_id, pipeline_name, mode, status, run_body, create_timestamp, "
            "update_timestamp, start_time, end_time, backfill_id) "
            "SELECT md5('run' || g), md5('snap1'), 'etl_job', 'default', 'SUCCESS', '{}', now(), now(), "
            "extract(epoch FROM now()), extract(epoch FROM now()) + 60, CASE WHEN g % 10 = 0 THEN 'bf1' END "
            "FROM generate_series(1, 100) g",
            "INSERT INTO run_tags (run_id, key, value) SELECT run_id, 'dagster/partition', 'p' || id FROM runs",
            "INSERT INTO event_logs (run_id, event, dagster_event_type, timestamp, step_key, asset_key) "
            "SELECT md5('run' || (g % 100 + 1)), '{}', 'STEP_SUCCESS', now(), 'op_' || (g % 5), "
            "'[\"asset_' || (g % 7) || '\"]' FROM generate_series(1, 500) g",
            "INSERT INTO asset_keys (asset_key, last_run_id, create_timestamp, cached_status_data) "
            "SELECT '[\"asset_' || g || '\"]', md5('run1'), now(), '{}' FROM generate_series(0, 6) g",
            "INSERT INTO concurrency_limits (concurrency_key, \"limit\", using_default_limit, create_timestamp) "
            "SELECT 'pool_' || g, g, g % 2 = 0, now() FROM generate_series(1, 4) g",
            "INSERT INTO bulk_actions (key, status, timestamp, body, action_type, job_name) "
            "VALUES ('bf1', 'COMPLETED', now(), '{}', 'PARTITION_BACKFILL', 'etl_job')",
            "INSERT INTO backfill_tags (backfill_id, key, value) VALUES ('bf1', 'team', 'data')",
        ),
        user_notes=("the packaged alembic.ini (dagster_postgres/alembic) copied next to a rollbook.toml; "
                    "`DATABASE_URL=postgresql+psycopg2://...`; run rollbook in Dagster's environment (its env.py "
                    "takes the connection rollbook hands it in `config.attributes`); its tables come from "
                    "create_all and its early revisions skip when a table is missing, and one (5c18fd3c2957) needs "
                    "a running `dagster instance migrate`, so no base_schema makes the rehearsal meaningful"),
    ),
    CorpusProject(
        name="airflow",
        # Installed with plain pip: Airflow's constraints files are not served by PyPI. `airflow db migrate` makes
        # a new database with create_all and stamps head; the history itself starts from a squashed 2.6.2 state.
        requirement="apache-airflow[postgres]==3.3.2",
        locate_config="import pathlib, airflow; print(pathlib.Path(airflow.__file__).parent / 'alembic.ini')",
        upgrade=("airflow", "db", "migrate"),
        upgrade_env={"AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": "{url}", "AIRFLOW_HOME": "{work}/airflow-home",
                     "AIRFLOW__CORE__LOAD_EXAMPLES": "False"},
        driver="postgresql+psycopg2",
        seed_sql=(
            "INSERT INTO dag_bundle (name, active) VALUES ('dags-folder', true)",
            "INSERT INTO dag (dag_id, is_paused, is_stale, bundle_name, timetable_type, partition_mapper_info, "
            "max_active_tasks, max_consecutive_failed_dag_runs, has_task_concurrency_limits, fileloc) "
            "SELECT 'etl_' || g, false, false, 'dags-folder', 'airflow.timetables.interval.CronDataIntervalTimetable', "
            "'{}', 16, 0, false, '/opt/airflow/dags/etl_' || g || '.py' FROM generate_series(1, 20) g",
            "INSERT INTO dag_run (dag_id, run_id, run_type, run_after, logical_date, state, start_date, end_date) "
            "SELECT 'etl_' || (g % 20 + 1), 'scheduled__' || g, 'scheduled', now() - g * interval '1 hour', "
            "now() - g * interval '1 hour', 'success', now() - g * interval '1 hour', now() - g * interval '1 hour' "
            "+ interval '5 minutes' FROM generate_series(1, 200) g",
            "INSERT INTO task_instance (id, task_id, dag_id, run_id, map_index, try_number, pool, pool_slots, state, "
            "start_date, end_date) SELECT gen_random_uuid(), t, dr.dag_id, dr.run_id, -1, 1, 'default_pool', 1, "
            "'success', dr.start_date, dr.end_date FROM dag_run dr CROSS JOIN (VALUES ('extract'), ('transform'), "
            "('load')) AS tasks(t)",
            "INSERT INTO variable (key, val, is_encrypted, description) "
            "SELECT 'setting_' || g, 'value ' || g, false, 'a setting' FROM generate_series(1, 10) g",
            "INSERT INTO connection (conn_id, conn_type, host, port, login, is_encrypted, is_extra_encrypted) "
            "SELECT 'warehouse_' || g, 'postgres', 'db' || g || '.internal', 5432, 'etl', false, false "
            "FROM generate_series(1, 5) g",
            "INSERT INTO slot_pool (pool, slots, description, include_deferred) "
            "VALUES ('etl_pool', 8, 'ETL jobs', false)",
            "INSERT INTO log (dttm, event, dag_id, owner) "
            "SELECT now() - g * interval '1 minute', 'cli_task_run', 'etl_' || (g % 20 + 1), 'airflow' "
            "FROM generate_series(1, 500) g",
        ),
        user_notes=("nothing beyond the database URL: the packaged alembic.ini (`airflow/alembic.ini`, "
                    "`script_location = %(here)s/migrations`); `DATABASE_URL=postgresql+psycopg2://...` and "
                    "Airflow's own `AIRFLOW__DATABASE__SQL_ALCHEMY_CONN` as its users set it (env.py imports "
                    "Airflow's settings); `apache-airflow[postgres]` for psycopg2; run rollbook in Airflow's "
                    "environment"),
    ),
    CorpusProject(
        name="zou",
        requirement="zou==1.0.97",
        # Zou builds its Alembic config in code (zou/cli.py): the packaged alembic.ini names no script_location,
        # so a user copies it and names the migrations folder. Its env.py reads sqlalchemy.url when no Flask app
        # is running. Zou's users name the database with DB_HOST, DB_PORT, DB_USERNAME, DB_PASSWORD and
        # DB_DATABASE and run `zou init-db` on a new database; the wrapper below sets them from the URL.
        locate_config=(
            "import configparser, pathlib, zou; migrations = pathlib.Path(zou.__file__).parent / 'migrations'; "
            "ini = configparser.ConfigParser(interpolation=None); ini.read(migrations / 'alembic.ini'); "
            "ini['alembic']['script_location'] = str(migrations); "
            "out = pathlib.Path('{work}') / 'alembic.ini'; ini.write(out.open('w')); print(out)"),
        upgrade=("python", "-c",
                 "import os, sys; from sqlalchemy.engine import make_url; u = make_url(sys.argv[1]); "
                 "os.environ.update(DB_HOST=u.host, DB_PORT=str(u.port), DB_USERNAME=u.username, "
                 "DB_PASSWORD=u.password, DB_DATABASE=u.database); os.execvp('zou', ['zou', 'init-db'])", "{url}"),
        # Zou refuses to import its app (which its migrations import) with the default SECRET_KEY.
        upgrade_env={"PREVIEW_FOLDER": "{work}/previews", "TMP_DIR": "{work}/tmp",
                     "SECRET_KEY": "corpus-secret-key-0123456789abcdef"},
        seed_sql=(
            "INSERT INTO project_status (id, name, color) VALUES (gen_random_uuid(), 'Open', '#000000')",
            "INSERT INTO project (id, name, production_style, project_status_id) SELECT gen_random_uuid(), 'Film "
            "' || g, '2d3d', (SELECT id FROM project_status LIMIT 1) FROM generate_series(1, 3) g",
            "INSERT INTO entity_type (id, name) VALUES (gen_random_uuid(), 'Character'), (gen_random_uuid(), "
            "'Shot')",
            "INSERT INTO entity (id, name, status, project_id, entity_type_id) SELECT gen_random_uuid(), 'asset_'"
            " || g, 'running', (SELECT id FROM project ORDER BY name LIMIT 1), (SELECT id FROM entity_type WHERE "
            "name = 'Character') FROM generate_series(1, 100) g",
            "INSERT INTO task_type (id, name) VALUES (gen_random_uuid(), 'Modeling'), (gen_random_uuid(), "
            "'Animation')",
            "INSERT INTO task_status (id, name, short_name, color) VALUES (gen_random_uuid(), 'Todo', 'todo', "
            "'#f5f5f5'), (gen_random_uuid(), 'Done', 'done', '#22d160')",
            "INSERT INTO person (id, first_name, last_name, role, email) SELECT gen_random_uuid(), 'Artist', 'No'"
            " || g, 'user', 'artist' || g || '@studio.example' FROM generate_series(1, 10) g",
            "INSERT INTO task (id, name, project_id, entity_id, task_type_id, task_status_id) SELECT "
            "gen_random_uuid(), 'main', e.project_id, e.id, tt.id, (SELECT id FROM task_status WHERE short_name ="
            " 'todo') FROM entity e CROSS JOIN task_type tt",
            "INSERT INTO comment (id, object_id, object_type, person_id, text) SELECT gen_random_uuid(), t.id, "
            "'Task', (SELECT id FROM person ORDER BY last_name LIMIT 1), 'looks good' FROM task t",
        ),
        user_notes=("a copy of the packaged alembic.ini with an absolute script_location (the packaged one names "
                    "none: `zou` sets it in code); `DATABASE_URL=postgresql+psycopg://...` (env.py reads "
                    "sqlalchemy.url when no Flask app runs); Zou's own `SECRET_KEY` set (its migrations import "
                    "the app, which refuses the default key); run rollbook in Zou's environment; `test-rollback` "
                    "refuses its history (a branch c4e8a2f1d6b3 merged again at e8c8e1e2744a)"),
    ),
    CorpusProject(
        name="keystone",
        # OpenStack Identity. Its history has two branches from one initial revision, `expand` and `contract`
        # (several heads); keystone-manage upgrades expand, then contract. Its migrations have no downgrade():
        # OpenStack does not support downgrades, and rollbook must say so rather than plan one.
        requirement="keystone==30.0.0",
        extra_requirements=("psycopg2-binary",),
        # keystone/common/sql/alembic.ini names only script_location; keystone sets version_locations in code
        # (keystone/common/sql/upgrades.py: versions/ and versions/<release>/<branch>): a user copies the ini and
        # names them, as keystone does.
        locate_config=(
            "import configparser, os, pathlib, keystone.common.sql.upgrades as up; "
            "sql_dir = pathlib.Path(up.__file__).parent; ini = configparser.ConfigParser(interpolation=None); "
            "ini.read(sql_dir / 'alembic.ini'); ini['alembic']['script_location'] = str(sql_dir / 'migrations'); "
            "ini['alembic']['version_locations'] = os.pathsep.join([up.VERSIONS_PATH] + [os.path.join("
            "up.VERSIONS_PATH, release, branch) for release in up.RELEASES for branch in up.MIGRATION_BRANCHES]); "
            "out = pathlib.Path('{work}') / 'alembic.ini'; ini.write(out.open('w')); print(out)"),
        # What an operator does: keystone.conf names the database, `keystone-manage db_sync` migrates it (expand,
        # then contract), its key repositories are set up, and `keystone-manage bootstrap` writes the default domain,
        # the admin project, user, roles and the identity endpoint through keystone's own API.
        upgrade=("sh", "-c", "printf '[database]\\nconnection = {url}\\n[fernet_tokens]\\nkey_repository = "
                 "{work}/fernet-keys\\n[credential]\\nkey_repository = {work}/credential-keys\\n' > "
                 "'{work}/keystone.conf' && keystone-manage --config-file '{work}/keystone.conf' db_sync && "
                 "keystone-manage --config-file '{work}/keystone.conf' fernet_setup --keystone-user root "
                 "--keystone-group root && keystone-manage --config-file '{work}/keystone.conf' credential_setup "
                 "--keystone-user root --keystone-group root && "
                 "keystone-manage --config-file '{work}/keystone.conf' bootstrap --bootstrap-password corpus-admin "
                 "--bootstrap-region-id RegionOne --bootstrap-public-url http://keystone.example:5000/v3"),
        driver="postgresql+psycopg2",
        # keystone's initial migration reads keystone's configuration options, which keystone-manage registers first.
        settings='[project]\nprepare = "keystone.conf:configure"\n',
        plan_target="expand@27e647c0fad4",
        rollback_target="expand@-3",
        seed_sql=(
            "INSERT INTO project (id, name, extra, description, enabled, domain_id, parent_id, is_domain) "
            "SELECT md5('project' || g), 'project-' || g, '{}', 'a tenant', true, 'default', 'default', false "
            "FROM generate_series(1, 30) g",
            "INSERT INTO \"user\" (id, extra, enabled, default_project_id, created_at, domain_id) "
            "SELECT md5('user' || g), '{}', true, md5('project' || (g % 30 + 1)), now(), 'default' "
            "FROM generate_series(1, 100) g",
            "INSERT INTO local_user (user_id, domain_id, name, failed_auth_count) "
            "SELECT md5('user' || g), 'default', 'user-' || g, 0 FROM generate_series(1, 100) g",
            "INSERT INTO mapping (id, rules, schema_version) SELECT 'mapping-' || g, '[]', '2.0' "
            "FROM generate_series(1, 5) g",
            "INSERT INTO service_provider (id, enabled, description, auth_url, sp_url, relay_state_prefix) "
            "SELECT 'sp-' || g, true, 'a provider', 'https://sp' || g || '.example/v3', "
            "'https://sp' || g || '.example/Shibboleth.sso', 'ss:mem:' FROM generate_series(1, 3) g",
            "INSERT INTO endpoint_group (id, name, description, filters) VALUES ('eg-1', 'public', 'public', '{}')",
            "INSERT INTO project_endpoint_group (endpoint_group_id, project_id) "
            "SELECT 'eg-1', md5('project' || g) FROM generate_series(1, 30) g",
            "INSERT INTO trust (id, trustor_user_id, trustee_user_id, project_id, impersonation, expires_at, extra) "
            "SELECT md5('trust' || g), md5('user' || g), md5('user' || (g + 1)), md5('project' || (g % 30 + 1)), "
            "false, now() + interval '1 day', '{}' FROM generate_series(1, 20) g",
            "INSERT INTO revocation_event (project_id, user_id, issued_before, revoked_at, audit_id) "
            "SELECT md5('project' || (g % 30 + 1)), md5('user' || (g % 100 + 1)), now() - g * interval '1 minute', "
            "now(), left(md5('audit' || g), 22) FROM generate_series(1, 500) g",
        ),
        user_notes=("a copy of keystone/common/sql/alembic.ini with an absolute script_location and the "
                    "`version_locations` keystone sets in code (versions/ and versions/<release>/<branch>); "
                    "`prepare = \"keystone.conf:configure\"` (its initial migration reads keystone's options, which "
                    "keystone-manage registers first); `DATABASE_URL=postgresql+psycopg2://...`; run rollbook in "
                    "keystone's environment; its history has two heads (`expand`, `contract`): name the branch in "
                    "every target (`contract@-1`, `expand@27e647c0fad4`); no migration has a downgrade()"),
    ),
    CorpusProject(
        name="ihatemoney",
        # A shared budget manager built with Flask-Migrate: its env.py is Flask-Migrate's template, which reads the
        # database URL and target_metadata from the running Flask app (current_app).
        requirement="ihatemoney==7.2.1",
        extra_requirements=("psycopg2-binary",),
        # The packaged alembic.ini names script_location "." (Flask-Migrate passes the folder in code): a user
        # copies it and names the folder.
        locate_config=(
            "import configparser, pathlib, ihatemoney; migrations = pathlib.Path(ihatemoney.__file__).parent / "
            "'migrations'; ini = configparser.ConfigParser(interpolation=None); ini.read(migrations / 'alembic.ini'); "
            "ini['alembic']['script_location'] = str(migrations); "
            "out = pathlib.Path('{work}') / 'alembic.ini'; ini.write(out.open('w')); print(out)"),
        # An operator writes ihatemoney.cfg (SQLALCHEMY_DATABASE_URI, SECRET_KEY) and names it in
        # IHATEMONEY_SETTINGS_FILE_PATH; the app migrates the database to head whenever it starts, and
        # `ihatemoney db upgrade --directory <ihatemoney>/migrations` (Flask-Migrate's command) does it explicitly.
        upgrade=("sh", "-c", "printf \"SQLALCHEMY_DATABASE_URI = '{url}'\\nSECRET_KEY = 'corpus-secret-key'\\n\" "
                 "> '{work}/ihatemoney.cfg' && ihatemoney db upgrade --directory \"$(python -c 'import ihatemoney, os; "
                 "print(os.path.dirname(ihatemoney.__file__))')/migrations\""),
        upgrade_env={"IHATEMONEY_SETTINGS_FILE_PATH": "{work}/ihatemoney.cfg"},
        driver="postgresql+psycopg2",
        seed_sql=(
            "INSERT INTO project (id, name, password, contact_email, logging_preference, default_currency) "
            "SELECT 'trip-' || g, 'Trip ' || g, 'scrypt:32768:8:1$salt$' || md5(g::text), "
            "'trip' || g || '@example.org', "
            "'ENABLED', 'EUR' FROM generate_series(1, 5) g",
            "INSERT INTO person (project_id, name, weight, activated) "
            "SELECT 'trip-' || (g % 5 + 1), 'Friend ' || g, CASE WHEN g % 4 = 0 THEN 2 ELSE 1 END, g % 7 <> 0 "
            "FROM generate_series(1, 20) g",
            "INSERT INTO bill (payer_id, amount, date, creation_date, what, bill_type, original_currency, "
            "converted_amount) SELECT p.id, g * 1.5, current_date - g, current_date - g, 'dinner ' || g, "
            "(CASE WHEN g % 10 = 0 THEN 'REIMBURSEMENT' ELSE 'EXPENSE' END)::billtype, 'EUR', g * 1.5 "
            "FROM generate_series(1, 200) g JOIN person p ON p.id = (SELECT min(id) FROM person) + g % 20",
            "INSERT INTO billowers (bill_id, person_id) SELECT b.id, p.id FROM bill b JOIN person payer "
            "ON payer.id = b.payer_id JOIN person p ON p.project_id = payer.project_id",
        ),
        # Flask-Migrate's env.py reads the database URL and target_metadata from the running app: rollbook runs each
        # step inside the app's context, as `flask db downgrade` does.
        settings=('[project]\nflask_app = "ihatemoney.run:create_app()"\n'
                  'target_metadata = "ihatemoney.models:db.metadata"\n'),
        user_notes=("a copy of the packaged alembic.ini with an absolute script_location (it names \".\"); "
                    "`flask_app = \"ihatemoney.run:create_app()\"` (its Flask-Migrate env.py reads `current_app`) and "
                    "`target_metadata = \"ihatemoney.models:db.metadata\"`; `IHATEMONEY_SETTINGS_FILE_PATH` naming "
                    "the same database as `DATABASE_URL=postgresql+psycopg2://...` (env.py connects to the app's "
                    "database); run rollbook in ihatemoney's environment"),
    ),
)
