"""``python -m selfsup``: the same as the ``selfsup`` command."""

import sys

from selfsup.cli import main

sys.exit(main())
