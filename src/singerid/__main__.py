"""`python -m singerid` runs the command line."""

from singerid.cli import main

raise SystemExit(main())
