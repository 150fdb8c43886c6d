"""Reading an Alembic project: its migrations, env.py settings, offline SQL, status and base schema."""
