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
        name="ckan",
        # CKAN's users install `ckan[requirements]` (its pinned dependencies, psycopg2 built from source), write
        # a ckan.ini with `ckan generate config` and run `ckan db init` (an alias of `ckan db upgrade`): the whole
        # history from 001 on a new database, then the migrations of the enabled plugins (activity).
        requirement="ckan[requirements]==2.12.0",
        # The packaged alembic.ini names its scripts with %(here)s and env.py reads sqlalchemy.url: usable as is.
        locate_config="import pathlib, ckan; print(pathlib.Path(ckan.__file__).parent / 'migration' / 'alembic.ini')",
        upgrade=("sh", "-c", "ckan generate config '{work}/ckan.ini' && ckan -c '{work}/ckan.ini' db init"),
        # CKAN reads these documented variables over its ckan.ini; Solr and Redis are not needed to migrate.
        upgrade_env={"CKAN_SQLALCHEMY_URL": "{url}", "CKAN_SITE_URL": "http://localhost:5000",
                     "CKAN_STORAGE_PATH": "{work}/storage"},
        driver="postgresql+psycopg2",
        # A portal's rows as CKAN writes them: text ids (uuids), organizations in "group", datasets with their
        # extras in package.extras (jsonb since 104), resources and views, tags, memberships, followers, activity.
        seed_sql=(
            "INSERT INTO \"user\" (id, name, fullname, email, password, created, sysadmin, state, about) "
            "SELECT gen_random_uuid()::text, 'user' || g, 'User ' || g, 'user' || g || '@portal.example', "
            "'$pbkdf2-sha512$hash', now() - g * interval '1 day', g = 1, 'active', 'about user ' || g "
            "FROM generate_series(1, 20) g",
            "INSERT INTO \"group\" (id, name, title, description, created, state, type, approval_status, "
            "is_organization, image_url, extras) SELECT gen_random_uuid()::text, 'org-' || g, 'Organization ' || g, "
            "'publishes data', now(), 'active', 'organization', 'approved', true, '', '{\"homepage\": \"x\"}' "
            "FROM generate_series(1, 3) g",
            "INSERT INTO \"group\" (id, name, title, created, state, type, approval_status, is_organization) "
            "SELECT gen_random_uuid()::text, 'theme-' || g, 'Theme ' || g, now(), 'active', 'group', 'approved', "
            "false FROM generate_series(1, 4) g",
            "INSERT INTO package (id, name, title, version, url, notes, author, author_email, maintainer, state, "
            "license_id, type, owner_org, private, metadata_created, metadata_modified, creator_user_id, extras, "
            "plugin_data) SELECT gen_random_uuid()::text, 'dataset-' || g, 'Dataset ' || g, '1.' || g, "
            "'http://data.example/' || g, 'notes ' || g, 'Author', 'author@portal.example', 'Maintainer', 'active', "
            "'cc-by', 'dataset', (SELECT id FROM \"group\" WHERE name = 'org-' || (g % 3 + 1)), g % 10 = 0, "
            "now() - g * interval '1 hour', now(), (SELECT id FROM \"user\" WHERE name = 'user1'), "
            "jsonb_build_object('spatial', 'region-' || g, 'frequency', 'monthly'), '{}' "
            "FROM generate_series(1, 100) g",
            "INSERT INTO resource (id, package_id, url, format, description, position, name, resource_type, "
            "mimetype, size, created, metadata_modified, state, url_type, extras, hash) "
            "SELECT gen_random_uuid()::text, p.id, 'http://data.example/' || p.name || '/' || r || '.csv', 'CSV', "
            "'file ' || r, r - 1, p.name || '-' || r, 'file', 'text/csv', 1024 * r, now(), now(), 'active', '', "
            "'{\"datastore_active\": false}', md5(p.name || r) FROM package p, generate_series(1, 3) r",
            "INSERT INTO resource_view (id, resource_id, title, view_type, \"order\", config) "
            "SELECT gen_random_uuid()::text, id, 'Table', 'datatables_view', 0, '{}' FROM resource",
            "INSERT INTO vocabulary (id, name) VALUES (gen_random_uuid()::text, 'country_codes')",
            "INSERT INTO tag (id, name, vocabulary_id) SELECT gen_random_uuid()::text, 'tag-' || g, "
            "CASE WHEN g > 8 THEN (SELECT id FROM vocabulary) END FROM generate_series(1, 10) g",
            "INSERT INTO package_tag (id, package_id, tag_id, state) SELECT gen_random_uuid()::text, p.id, t.id, "
            "'active' FROM package p JOIN tag t ON right(p.name, 1) = right(t.name, 1)",
            "INSERT INTO member (id, group_id, table_id, table_name, capacity, state) "
            "SELECT gen_random_uuid()::text, g.id, p.id, 'package', 'public', 'active' FROM package p "
            "JOIN \"group\" g ON g.name = 'theme-' || (length(p.name) % 4 + 1)",
            "INSERT INTO member (id, group_id, table_id, table_name, capacity, state) "
            "SELECT gen_random_uuid()::text, g.id, u.id, 'user', 'editor', 'active' FROM \"user\" u "
            "JOIN \"group\" g ON g.is_organization",
            "INSERT INTO package_member (package_id, user_id, capacity, modified) "
            "SELECT p.id, u.id, 'editor', now() FROM package p JOIN \"user\" u ON u.name = 'user2'",
            "INSERT INTO user_following_dataset (follower_id, object_id, datetime) "
            "SELECT u.id, p.id, now() FROM \"user\" u JOIN package p ON right(p.name, 1) = right(u.name, 1)",
            "INSERT INTO user_following_group (follower_id, object_id, datetime) "
            "SELECT u.id, g.id, now() FROM \"user\" u, \"group\" g WHERE u.name IN ('user3', 'user4')",
            "INSERT INTO dashboard (user_id, activity_stream_last_viewed, email_last_sent) "
            "SELECT id, now(), now() FROM \"user\"",
            "INSERT INTO activity (id, timestamp, user_id, object_id, activity_type, data) "
            "SELECT gen_random_uuid()::text, p.metadata_created, p.creator_user_id, p.id, 'new package', "
            "'{\"package\": {}}' FROM package p",
            "INSERT INTO api_token (id, name, user_id, last_access, plugin_extras) "
            "SELECT gen_random_uuid()::text, 'token', id, now(), '{}' FROM \"user\" WHERE sysadmin",
            "INSERT INTO system_info (key, value, state) VALUES ('ckan.site_title', 'Open Data Portal', 'active')",
            "INSERT INTO task_status (id, entity_id, entity_type, task_type, key, value, state, last_updated) "
            "SELECT gen_random_uuid()::text, id, 'resource', 'datapusher', 'datapusher', '{}', 'complete', now() "
            "FROM resource LIMIT 50",
            "INSERT INTO tracking_raw (user_key, url, tracking_type) "
            "SELECT md5(g::text), '/dataset/dataset-' || (g % 100 + 1), 'page' FROM generate_series(1, 300) g",
        ),
        user_notes=("nothing beyond the database URL: the packaged alembic.ini (`ckan/migration/alembic.ini`, "
                    "`script_location = %(here)s`); `DATABASE_URL=postgresql+psycopg2://...` (CKAN's own "
                    "`sqlalchemy.url` names psycopg2); run rollbook in CKAN's environment"),
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
                    "the app, which refuses the default key); run rollbook in Zou's environment (its branch from "
                    "c4e8a2f1d6b3, merged again at e8c8e1e2744a, needs nothing: test-rollback rehearses it)"),
    ),
    CorpusProject(
        name="optuna",
        requirement="optuna==5.0.0",
        extra_requirements=("psycopg2-binary",),
        # The packaged alembic.ini (optuna/storages/_rdb) names script_location relative to the current folder
        # (optuna builds its Alembic config in code): a user copies it and names the folder.
        locate_config=(
            "import configparser, pathlib, optuna; rdb = pathlib.Path(optuna.__file__).parent / 'storages' / '_rdb'; "
            "ini = configparser.ConfigParser(interpolation=None); ini.read(rdb / 'alembic.ini'); "
            "ini['alembic']['script_location'] = str(rdb / 'alembic'); "
            "out = pathlib.Path('{work}') / 'alembic.ini'; ini.write(out.open('w')); print(out)"),
        # A new storage is made by the first `optuna create-study` (create_all of the current model, stamped at
        # head); `optuna storage upgrade` is what users run after each Optuna upgrade. The rows come from Optuna's
        # own API: studies optimised as users do (single- and multi-objective, pruned trials with intermediate
        # values, user attributes), so every table the history touches holds rows.
        upgrade=("sh", "-c", "optuna create-study --storage '{url}' --study-name bootstrap && "
                 "optuna storage upgrade --storage '{url}' && python -c \"$0\"",
                 "import optuna; optuna.logging.set_verbosity(optuna.logging.WARNING); "
                 "storage = '{url}'\n"
                 "def objective(trial):\n"
                 "    x = trial.suggest_float('x', -10, 10); n = trial.suggest_int('layers', 1, 4)\n"
                 "    trial.suggest_categorical('optimizer', ['adam', 'sgd']); trial.set_user_attr('note', 'corpus')\n"
                 "    for step in range(3):\n"
                 "        trial.report((x - 2) ** 2 + step, step)\n"
                 "        if trial.should_prune(): raise optuna.TrialPruned()\n"
                 "    return (x - 2) ** 2 + n\n"
                 "for name in ('tune-a', 'tune-b'):\n"
                 "    study = optuna.create_study(storage=storage, study_name=name, "
                 "pruner=optuna.pruners.MedianPruner())\n"
                 "    study.set_user_attr('owner', 'corpus'); study.optimize(objective, n_trials=30)\n"
                 "multi = optuna.create_study(storage=storage, study_name='pareto', "
                 "directions=['minimize', 'maximize'])\n"
                 "multi.optimize(lambda t: (t.suggest_float('a', 0, 1), t.suggest_float('b', 0, 1)), n_trials=20)\n"),
        driver="postgresql+psycopg2",
        user_notes=("a copy of the packaged alembic.ini (optuna/storages/_rdb) with an absolute script_location (it "
                    "is relative to the current folder); `DATABASE_URL=postgresql+psycopg2://...` (Optuna's "
                    "`postgresql://` storage URLs mean psycopg2); run rollbook in Optuna's environment"),
    ),
    CorpusProject(
        name="phoenix",
        requirement="arize-phoenix[pg]==20.26.1",
        # Phoenix runs Alembic from its own code (phoenix.db.migrate): the packaged alembic.ini names
        # script_location relative to phoenix/db, so a user copies it and names the folder.
        locate_config=(
            "import configparser, pathlib, phoenix.db; db = pathlib.Path(phoenix.db.__file__).parent; "
            "ini = configparser.ConfigParser(interpolation=None); ini.read(db / 'alembic.ini'); "
            "ini['alembic']['script_location'] = str(db / 'migrations'); "
            # env.py passes version_table_schema=get_env_database_schema() or None (PHOENIX_SQL_DATABASE_SCHEMA,
            # unset here): the version table is in public, which a user says once.
            "ini['alembic']['version_table_schema'] = 'public'; "
            "out = pathlib.Path('{work}') / 'alembic.ini'; ini.write(out.open('w')); print(out)"),
        # Phoenix migrates its database when the server starts (PHOENIX_SQL_DATABASE_URL): its engine factory
        # runs Alembic's upgrade to head in a thread, as `phoenix serve` does before it listens.
        upgrade=("python", "-c", "from phoenix.db.engines import create_engine; from phoenix.config import "
                 "get_env_database_connection_str; create_engine(get_env_database_connection_str())"),
        upgrade_env={"PHOENIX_SQL_DATABASE_URL": "{libpq_url}", "PHOENIX_WORKING_DIR": "{work}/phoenix-home"},
        driver="postgresql+asyncpg",
        # Traces as Phoenix's collector writes them: projects, sessions, traces, spans with OpenInference
        # attributes and token counts, annotations; and a dataset with its versions, examples and revisions.
        seed_sql=(
            "INSERT INTO projects (name, description) SELECT 'agent-' || g, 'an LLM app' FROM generate_series(1, 3) g",
            "INSERT INTO project_sessions (session_id, project_id, start_time, end_time) SELECT 'session-' || g, "
            "(SELECT min(id) FROM projects WHERE name LIKE 'agent-%'), now() - g * interval '1 hour', "
            "now() - g * interval '1 hour' + interval '5 minutes' FROM generate_series(1, 10) g",
            "INSERT INTO traces (project_rowid, trace_id, project_session_rowid, start_time, end_time) "
            "SELECT (SELECT min(id) FROM projects WHERE name LIKE 'agent-%'), md5('trace' || g), "
            "(SELECT min(id) FROM project_sessions) + g % 10, now() - g * interval '1 minute', "
            "now() - g * interval '1 minute' + interval '2 seconds' FROM generate_series(1, 100) g",
            "INSERT INTO spans (trace_rowid, span_id, parent_id, name, span_kind, start_time, end_time, attributes, "
            "events, status_code, status_message, cumulative_error_count, cumulative_llm_token_count_prompt, "
            "cumulative_llm_token_count_completion, llm_token_count_prompt, llm_token_count_completion) "
            "SELECT t.id, substr(md5(t.trace_id || s), 1, 16), "
            "CASE WHEN s > 1 THEN substr(md5(t.trace_id || 1), 1, 16) END, "
            "CASE WHEN s = 1 THEN 'agent' ELSE 'llm' END, CASE WHEN s = 1 THEN 'CHAIN' ELSE 'LLM' END, "
            "t.start_time, t.end_time, jsonb_build_object('llm', jsonb_build_object('model_name', 'gpt-4o', "
            "'token_count', jsonb_build_object('prompt', 120, 'completion', 30)), 'input', jsonb_build_object("
            "'value', 'question ' || t.id)), '[]'::jsonb, 'OK', '', 0, 120, 30, 120, 30 "
            "FROM traces t, generate_series(1, 3) s",
            "INSERT INTO span_annotations (span_rowid, name, label, score, explanation, metadata, annotator_kind, "
            "identifier, source) SELECT id, 'correctness', 'correct', 1.0, 'matches', '{}'::jsonb, 'LLM', '', 'API' "
            "FROM spans WHERE span_kind = 'LLM'",
            "INSERT INTO datasets (name, description, metadata) VALUES ('questions', 'golden set', '{}'::jsonb)",
            "INSERT INTO dataset_versions (dataset_id, description, metadata) "
            "SELECT id, 'v1', '{}'::jsonb FROM datasets WHERE name = 'questions'",
            "INSERT INTO dataset_examples (dataset_id, span_rowid) SELECT (SELECT id FROM datasets WHERE name = "
            "'questions'), id FROM spans WHERE span_kind = 'CHAIN' LIMIT 20",
            "INSERT INTO dataset_example_revisions (dataset_example_id, dataset_version_id, input, output, metadata, "
            "revision_kind) SELECT e.id, (SELECT min(id) FROM dataset_versions), jsonb_build_object('q', e.id), "
            "jsonb_build_object('a', 'answer'), '{}'::jsonb, 'CREATE' FROM dataset_examples e",
        ),
        user_notes=("a copy of the packaged alembic.ini with an absolute script_location (it is relative to "
                    "phoenix/db) and `version_table_schema = public` (env.py computes it from "
                    "PHOENIX_SQL_DATABASE_SCHEMA; name that schema if you set it); "
                    "`DATABASE_URL=postgresql+asyncpg://...` (Phoenix turns its "
                    "PHOENIX_SQL_DATABASE_URL into an asyncpg URL; its env.py is async); run rollbook in "
                    "Phoenix's environment"),
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
