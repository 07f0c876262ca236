"""``python -m livedata_core.cli`` is the ``livedata`` command."""

import sys

from .commands import main

sys.exit(main())
