"""`python -m pal_core.cli ...`: the `pal` command without the console script."""

import sys

from . import main

sys.exit(main())
