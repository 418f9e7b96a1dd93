"""`python -m skybuffer` runs the CLI."""

from skybuffer.cli import main

main()
