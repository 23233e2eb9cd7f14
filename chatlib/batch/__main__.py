"""`python -m chatlib.batch run|make ...`: see `chatlib.batch.cli`."""

from chatlib.batch.cli import cli_main

raise SystemExit(cli_main())
