"""`python -m chatlib`: see `chatlib._cli`."""

from chatlib._cli import main

raise SystemExit(main())
