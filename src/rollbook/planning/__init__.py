"""The downgrade plan: operations read from SQL and Python, risk, live counts, side effects."""
