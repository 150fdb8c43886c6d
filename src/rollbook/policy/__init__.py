"""The policy gate: the team's rules per environment and whether a rollback may run."""
