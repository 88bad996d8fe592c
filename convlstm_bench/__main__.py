"""``python -m convlstm_bench``: the ``convlstm-bench`` console script."""

import sys

from .cli import main

sys.exit(main())
