"""``python -m parallelepipedonn.cli``: the command line, as the console script runs it."""

import sys

from . import main

sys.exit(main())
