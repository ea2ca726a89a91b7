"""`python -m tick_tools <command>` (the same CLI as `tickpipe`)."""

from tick_tools.cli import main

main()
