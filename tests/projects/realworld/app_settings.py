"""The application's settings, as env.py reads them: the database URL comes from the environment."""

import os


def database_url() -> str:
    # Read at call time, not import time: one process may migrate several databases.
    return os.environ["REALWORLD_DB_URL"]
