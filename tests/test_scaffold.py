"""``livedata plugin new NAME``: the example plugin under a new name; the generated project installs, its own tests
pass, and livedata lists it; the REST-only variant too.

The project is installed into a throw-away venv that sees this environment's packages (through a ``.pth``
file calling ``site.addsitedir``), so the shared environment is never changed.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

from livedata_core.cli import main
from livedata_core.errors import ConfigError
from livedata_core import scaffold
from livedata_core.cli.scaffold import FILES, create_plugin

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "livedata_example"


@pytest.mark.parametrize("name", ["Acme", "1acme", "acme-fx", "", "a" * 33, "class", "demo", "example", "acme fx"])
def test_bad_names_are_refused_with_a_reason(tmp_path, name):
    with pytest.raises(ConfigError) as info:
        create_plugin(name, tmp_path)
    assert repr(name) in str(info.value)
    assert not list(tmp_path.iterdir())


def test_existing_project_or_missing_directory_is_refused(tmp_path):
    (tmp_path / "livedata-acme").mkdir()
    with pytest.raises(ConfigError, match="already exists"):
        create_plugin("acme", tmp_path)
    with pytest.raises(ConfigError, match="does not exist"):
        create_plugin("acme", tmp_path / "nowhere")


def test_cli_writes_every_file(tmp_path, capsys):
    assert main(["plugin", "new", "acme", "-d", str(tmp_path)]) == 0
    root = tmp_path / "livedata-acme"
    written = sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())
    assert written == sorted([f.replace("livedata_example", "livedata_acme") for f in FILES] + ["README.md"])
    assert f"created {root}" in capsys.readouterr().out
    pyproject = (root / "pyproject.toml").read_text()
    assert '[project.entry-points.livedata]\nacme = "livedata_acme"' in pyproject
    for path in root.rglob("*.py"):
        compile(path.read_text(), str(path), "exec")


def test_the_project_is_the_example_under_the_new_name_read_from_the_example_itself(tmp_path, monkeypatch):
    root = create_plugin("acme_fx", tmp_path)
    stream = (root / "livedata_acme_fx" / "stream.py").read_text()
    expected = (EXAMPLE / "livedata_example" / "stream.py").read_text()
    expected = expected.replace("Example", "AcmeFx").replace('BROKER = "example"', 'BROKER = "acme_fx"')
    assert stream == expected
    assert "livedata_example" not in (root / "tests" / "conftest.py").read_text()
    # No copy of the example in scaffold.py: a change to the example is in the next generated project.
    copy = tmp_path / "changed-example"
    shutil.copytree(EXAMPLE, copy, ignore=shutil.ignore_patterns("*.egg-info", "__pycache__"))
    changed = copy / "livedata_example" / "stream.py"
    changed.write_text(changed.read_text().replace("ping_interval = 1.0", "ping_interval = 2.5"))
    monkeypatch.setattr(scaffold, "example_root", lambda: copy)
    again = create_plugin("acme_fy", tmp_path)
    assert "ping_interval = 2.5" in (again / "livedata_acme_fy" / "stream.py").read_text()


def test_the_rest_variant_has_no_stream(tmp_path):
    root = create_plugin("acme", tmp_path, rest=True)
    assert not (root / "livedata_acme" / "stream.py").exists()
    init = (root / "livedata_acme" / "__init__.py").read_text()
    assert "stream" not in init and "websocket" not in init
    assert '"quotes"' not in (root / "tests" / "test_runner.py").read_text()
    for path in root.rglob("*.py"):
        compile(path.read_text(), str(path), "exec")


def _clean_env() -> dict[str, str]:
    drop = ("LIVEDATA_", "PYTEST_", "PYTHONPATH", "VIRTUAL_ENV")
    return {k: v for k, v in os.environ.items() if not k.startswith(drop)}


def _run(args: list[str], cwd: Path, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, cwd=cwd, env=_clean_env(), capture_output=True, text=True, timeout=timeout)


def _venv_seeing_this_env(where: Path) -> Path:
    """A venv whose Python also imports this environment's packages (livedata-core, pytest, pip)."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(where)], check=True, timeout=60)
    python = where / "bin" / "python"
    purelib = _run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], where)
    site_packages = Path(purelib.stdout.strip())
    parent = sysconfig.get_paths()["purelib"]
    (site_packages / "_livedata_parent_env.pth").write_text(f"import site; site.addsitedir({parent!r})\n")
    return python


@pytest.mark.parametrize(("rest", "capabilities"), [
    (False, ["authenticate", "fetch_accounts", "fetch_balances", "fetch_positions", "stream"]),
    (True, ["authenticate", "fetch_accounts", "fetch_balances", "fetch_positions"]),
], ids=["websocket", "rest"])  # fmt: skip
def test_generated_project_installs_passes_its_tests_and_is_listed(tmp_path, rest, capabilities):
    root = create_plugin("acme", tmp_path, rest=rest)
    python = _venv_seeing_this_env(tmp_path / "venv")

    installed = _run([str(python), "-m", "pip", "install", "-q", "--no-deps", "-e", str(root)], root, timeout=120)
    assert installed.returncode == 0, installed.stdout + installed.stderr

    tests = _run([str(python), "-m", "pytest", "-q", "-p", "no:cacheprovider"], root)
    assert tests.returncode == 0, tests.stdout[-4000:] + tests.stderr[-2000:]
    assert " passed" in tests.stdout and "failed" not in tests.stdout

    listing = _run(
        [str(python), "-c", "import sys; from livedata_core.cli import main; sys.exit(main(['plugins', '--json']))"], root
    )
    assert listing.returncode == 0, listing.stderr
    plugins = json.loads(listing.stdout)
    [record] = [p for p in plugins["plugins"] if p["broker"] == "acme"]
    assert (record["distribution"], record["version"]) == ("livedata-acme", "0.1.0")
    assert record["capabilities"] == capabilities
