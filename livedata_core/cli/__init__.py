"""The ``livedata`` command (entry point ``livedata_core.cli:main``; ``python -m livedata_core.cli`` too).

- :mod:`.commands`: the argument parser and every subcommand;
- :mod:`.tables`: the plain-text tables the commands print;
- :mod:`.scaffold`: ``livedata plugin new``, a new plugin generated from the example plugin.
"""

from .commands import main

__all__ = ["main"]
