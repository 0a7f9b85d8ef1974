"""`python -m engine.cli` is `neural-style`."""

import sys

from . import main

sys.exit(main())
