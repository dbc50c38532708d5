"""``python -m flock``: the ``flock`` command line (:func:`flock.cli.main`)."""

from flock.cli import main

raise SystemExit(main())
