"""The record of a run: the archive with its hash chain, signing, the run recorder, a run's verdict."""
