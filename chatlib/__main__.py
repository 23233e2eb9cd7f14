"""``python -m chatlib``: see :mod:`chatlib._cli`."""

from chatlib._cli import main

raise SystemExit(main())
