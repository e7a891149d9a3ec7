"""``python -m longops`` runs the CLI."""

from longops.cli import main

main()
