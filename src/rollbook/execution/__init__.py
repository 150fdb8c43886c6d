"""Running a downgrade: the steps under lock and timeouts, diagnosis of failures, verification."""
