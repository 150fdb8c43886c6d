"""What the procedures site draws from records and plans."""
