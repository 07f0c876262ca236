"""``python -m livedata_core`` is the ``livedata`` command."""

import sys

from .cli import main

sys.exit(main())
