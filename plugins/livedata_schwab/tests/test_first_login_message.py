"""Before the first login there is nothing to log in *again* to: the message says to log in."""

from __future__ import annotations

import os
import subprocess
import sys


def test_a_command_before_the_first_login_says_to_log_in(tmp_path):
    env = {**os.environ, "LIVEDATA_TOKEN_STORE": "file", "LIVEDATA_TOKEN_DIR": str(tmp_path / "tokens"),
           "LIVEDATA_SCHWAB_APP_KEY": "k" * 32, "LIVEDATA_SCHWAB_APP_SECRET": "s" * 16}
    out = subprocess.run([sys.executable, "-m", "livedata_core.cli", "positions", "schwab", "--no-publish"],
                         cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 1
    assert out.stderr.strip() == "livedata: no Schwab tokens saved yet: run `livedata auth schwab` to log in", out.stderr
