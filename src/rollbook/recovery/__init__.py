"""The safety nets: backups, restoring them, and rehearsing rollbacks on copies."""
