"""``python -m perface`` runs the ``perface`` command line."""

import sys

from .cli import main

sys.exit(main())
