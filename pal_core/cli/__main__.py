"""`python -m pal_core.cli ...`: the `pal` command without the console script."""

import os
import sys

# `python -m` puts the current folder first on sys.path: a `comfy/`, `torch.py` or `yaml.py` in whatever
# folder the command is started from would then be imported (and run) instead of the installed one. The
# `pal` script never has it; here it is dropped before anything else is imported (as `python -P` does).
if not sys.flags.safe_path and sys.path and sys.path[0] in ("", os.getcwd()):
    del sys.path[0]

from . import main  # noqa: E402

sys.exit(main())
