"""`python -m chatlib`: the `chatlib` command (see `chatlib.cli`)."""

from chatlib.cli import main

raise SystemExit(main())
