"""`python -m engram ...`: the command line, run from a checkout without installing it (DVC stages do)."""

from engram.cli import main

main(prog_name="engram")
