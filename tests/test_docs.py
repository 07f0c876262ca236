"""The docs and the README say what the code does: their TOML loads and their command lines parse."""

import shlex
import tomllib
from pathlib import Path

import pytest

from livedata_core.cli import build_parser
from livedata_core.errors import ConfigError
from livedata_core.plugins import get_brokers
from livedata_core.runner import Runner, load_config

ROOT = Path(__file__).resolve().parent.parent
DOCS = sorted([ROOT / "README.md", *ROOT.glob("docs/**/*.md")])


def _blocks(path: Path, langs: tuple[str, ...]) -> list[str]:
    """The fenced code blocks of a Markdown file whose language is one of ``langs``."""
    blocks, current, lang = [], None, None
    for line in path.read_text().splitlines():
        if line.startswith("```"):
            if current is None:
                current, lang = [], line[3:].strip()
            else:
                if lang in langs:
                    blocks.append("\n".join(current) + "\n")
                current = None
        elif current is not None:
            current.append(line)
    return blocks


TOML = [(p, i, b) for p in DOCS for i, b in enumerate(_blocks(p, ("toml",)))]


@pytest.mark.parametrize("path, index, block", TOML, ids=[f"{p.relative_to(ROOT)}#{i}" for p, i, _ in TOML])
def test_every_toml_example_is_a_valid_configuration(path, index, block, monkeypatch):
    monkeypatch.delenv("LIVEDATA_REDIS_URL", raising=False)
    # As a reader following the broker docs has them: the Schwab app credentials in the environment.
    monkeypatch.setenv("LIVEDATA_SCHWAB_APP_KEY", "doc-app-key")
    monkeypatch.setenv("LIVEDATA_SCHWAB_APP_SECRET", "doc-app-secret")
    data = tomllib.loads(block)
    if not {"redis", "brokers", "backoff"} & set(data):
        pytest.skip("not a runner configuration")
    config = load_config(data, env={})
    installed = get_brokers()
    missing = [name for name in config.brokers if name not in installed]
    if missing:
        pytest.skip(f"broker plugin(s) {missing} not installed")
    try:
        Runner(config)  # checks every broker's own settings; connects to nothing
    except ConfigError as exc:
        pytest.fail(f"{path.relative_to(ROOT)} example #{index} is refused: {exc}")


def _command_lines():
    for path in DOCS:
        for block in _blocks(path, ("bash", "sh", "console", "")):
            for line in block.splitlines():
                line = line.split("  #")[0].strip().removeprefix("$ ")
                if line.startswith("livedata "):
                    yield path, line


LINES = sorted(set(_command_lines()))


@pytest.mark.parametrize("path, line", LINES, ids=[line for _, line in LINES])
def test_every_documented_command_line_parses(path, line):
    args = shlex.split(line.replace("...", "X"))[1:]
    try:
        build_parser().parse_args(args)
    except SystemExit as exc:
        if exc.code:
            pytest.fail(f"{path.relative_to(ROOT)}: `{line}` is not accepted by the CLI")
