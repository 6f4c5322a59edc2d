"""``python -m formal_algorithms``: the command-line program (see :mod:`formal_algorithms.cli`)."""

from .cli import main

raise SystemExit(main())
