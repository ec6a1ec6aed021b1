"""``python -m jflows.cli``: the same as the ``jflows`` console script."""

import sys

from jflows.cli import main

sys.exit(main())
