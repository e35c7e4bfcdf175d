"""``python -m nonxfer_bench``: the ``nonxfer-bench`` command."""

import sys

from nonxfer_bench.cli import main

sys.exit(main())
