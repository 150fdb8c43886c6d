"""The runbooks' code: parameters, the run context, one module per runbook, and the runner."""
