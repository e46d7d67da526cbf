"""``python -m benchmarks [--quick] [--only SCENARIO]``: see ``benchmarks.suite``."""

import sys

from .suite import main

sys.exit(main())
