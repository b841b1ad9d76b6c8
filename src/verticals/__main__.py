"""`python -m verticals` is the `verticals` command."""

from verticals.cli import main

main()
