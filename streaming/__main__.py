"""`python -m streaming <command>`."""

from streaming.cli import main

main()
