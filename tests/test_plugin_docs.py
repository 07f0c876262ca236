"""The plugin docs match the code: one hooks.md section per hookspec, the tutorial's files equal the example's,
and testing.md names every conformance test and fixture."""

from __future__ import annotations

import inspect
import re
from pathlib import Path

import pluggy
import pytest

from livedata_core import hookspecs
from livedata_core.testing import conformance

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs" / "plugins"
EXAMPLE = ROOT / "examples" / "livedata_example"

_HEADING = re.compile(r"^## `(\w+)\((.*?)\)`$", re.M)
_TAGGED_BLOCK = re.compile(r"^```\w+ file=(\S+)\n(.*?)^```$", re.M | re.S)


def _hookspecs() -> dict[str, tuple[str, inspect.Signature | None, str]]:
    pm = pluggy.PluginManager(hookspecs.PROJECT)
    pm.add_hookspecs(hookspecs)
    out = {}
    for name in dir(pm.hook):
        caller = getattr(pm.hook, name)
        spec = getattr(caller, "spec", None)
        if spec is None:
            continue
        signature = f"{name}({', '.join(tuple(spec.argnames) + tuple(spec.kwargnames))})"
        out[name] = (signature, inspect.getdoc(spec.function) or "")
    return out


def _sections(text: str) -> dict[str, str]:
    """Hook sections of hooks.md by signature, each with its body up to the next ``## `` heading."""
    sections = {}
    matches = list(_HEADING.finditer(text))
    for match, following in zip(matches, matches[1:] + [None]):
        end = following.start() if following else len(text)
        body = text[match.end() : end]
        body = body.split("\n## ", 1)[0]
        sections[f"{match.group(1)}({match.group(2)})"] = body
    return sections


def test_every_hookspec_has_a_section_headed_by_its_exact_signature():
    sections = _sections((DOCS / "hooks.md").read_text())
    specs = _hookspecs()
    assert len(specs) >= 12
    missing = [sig for sig, _ in specs.values() if sig not in sections]
    assert not missing, f"docs/plugins/hooks.md has no '## `SIGNATURE`' section for {missing}"
    stale = sorted(set(sections) - {sig for sig, _ in specs.values()})
    assert not stale, f"docs/plugins/hooks.md documents hooks that do not exist (or changed): {stale}"


_ROLE = re.compile(r":(?:class|func|meth|data|attr|exc|mod|obj):`(~?)([\w.]+)`")
_FIELD = re.compile(r"^:(param|returns?|raises)\s*([\w.]*):\s*", re.M)


def markdown(doc: str) -> str:
    """A docstring as hooks.md shows it: Sphinx roles and field lists turned into Markdown."""
    text = _ROLE.sub(lambda m: f"`{m.group(2).rsplit('.', 1)[-1] if m.group(1) else m.group(2)}`", doc)
    text = re.sub(r"``([^`]+)``", r"`\1`", text)

    def field(m: re.Match) -> str:
        kind, name = m.group(1), m.group(2)
        if kind == "param":
            return f"- `{name}`: "
        return "- Returns " if kind.startswith("return") else f"- Raises `{name}`: "

    text = _FIELD.sub(field, text)
    return re.sub(r"\n {2,}(?=\S)", "\n  ", text)  # continuation lines of a field item


def test_markdown_rendering_of_docstrings():
    doc = "Use :class:`~livedata_core.plugin_kit.broker.BrokerInfo` and ``ctx``.\n\n:param ctx: the context,\n    more.\n:return: a thing.\n:raises AuthError: refused."
    assert markdown(doc) == ("Use `BrokerInfo` and `ctx`.\n\n- `ctx`: the context,\n  more.\n- Returns a thing.\n"
                             "- Raises `AuthError`: refused.")  # fmt: skip


@pytest.mark.parametrize("hook", sorted(_hookspecs()))
def test_hook_section_has_the_docstring_and_an_example(hook):
    signature, doc = _hookspecs()[hook]
    body = _sections((DOCS / "hooks.md").read_text())[signature]
    assert not re.search(r":(class|func|meth|param|return|raises)[: ]", body), f"Sphinx markup in the {signature} section"
    for paragraph in markdown(doc).split("\n\n"):
        assert paragraph in body, f"the {signature} section lacks this part of the hookspec docstring:\n{paragraph}"
    assert "```python\n" in body and f"def {hook}(" in body, f"the {signature} section needs a python example"


def _example_files() -> set[str]:
    files = {"pyproject.toml"}
    for path in EXAMPLE.rglob("*.py"):
        relative = path.relative_to(EXAMPLE)
        if not any(part.startswith(".") or part.endswith(".egg-info") or part == "__pycache__" for part in relative.parts):
            files.add(relative.as_posix())
    return files


def test_tutorial_code_blocks_are_the_example_files_word_for_word():
    blocks = _TAGGED_BLOCK.findall((DOCS / "tutorial.md").read_text())
    tagged = [path for path, _ in blocks]
    assert len(tagged) == len(set(tagged)), "a file appears twice in the tutorial"
    assert set(tagged) == _example_files(), "the tutorial must show every file of examples/livedata_example once"
    for path, code in blocks:
        assert code == (EXAMPLE / path).read_text(), f"tutorial block file={path} differs from {EXAMPLE / path}"


def test_testing_doc_names_every_conformance_test_and_fixture():
    text = (DOCS / "testing.md").read_text()
    ids = [
        re.match(r"test_(TC_[A-Z]+_?\d+)", name).group(1).replace("_", "-")
        for name in dir(conformance.ConformanceSuite)
        if name.startswith("test_TC_")
    ]
    assert len(ids) >= 15
    for test_id in ids:
        assert f"| {test_id} |" in text, f"testing.md does not describe {test_id}"
    source = inspect.getsource(conformance)
    for fixture in sorted(set(re.findall(r'"(conformance_[a-z_]+)"', source))):
        assert f"`{fixture}`" in text, f"testing.md does not describe the fixture {fixture}"
