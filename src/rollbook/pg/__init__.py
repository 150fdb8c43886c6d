"""PostgreSQL itself: connections, identity, catalog snapshots, scratch databases, client tools, locks."""
