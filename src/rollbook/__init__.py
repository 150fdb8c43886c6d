"""rollbook: safe, explainable and auditable rollback of Alembic migrations on PostgreSQL."""
