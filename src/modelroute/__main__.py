"""``python -m modelroute`` – the same as the ``modelroute`` console script."""

import sys

from modelroute.cli import main

sys.exit(main())
