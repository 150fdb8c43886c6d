"""`python -m rollbook`: the same command as `rollbook`."""

from rollbook.cli import main

main(prog_name="rollbook")
