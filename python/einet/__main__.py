"""``python -m einet``: the ``einet`` command."""

import sys

from .cli import main

sys.exit(main())
