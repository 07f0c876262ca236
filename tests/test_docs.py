"""The docs and the README say what the code does: their TOML loads and their command lines parse."""

import shlex
import tomllib
from pathlib import Path

import pytest

from livedata_core.cli.commands import build_parser
from livedata_core.errors import ConfigError
from livedata_core.plugin_kit.plugins import get_brokers
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
    missing = sorted({b.plugin for b in config.brokers.values()} - set(installed))  # instances name their plugin
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


# -- the plain redis-py subscriber snippets ------------------------------------------------------------------


def _docstring_blocks(path: Path) -> list[str]:
    """The ``::`` literal blocks of a module docstring, dedented."""
    import ast
    import textwrap

    doc = ast.get_docstring(ast.parse(path.read_text())) or ""
    blocks, lines = [], doc.splitlines()
    for i, line in enumerate(lines):
        if line.rstrip().endswith("::"):
            body = []
            for following in lines[i + 1:]:
                if following.strip() and not following.startswith(" "):
                    break
                body.append(following)
            blocks.append(textwrap.dedent("\n".join(body)).strip() + "\n")
    return blocks


def _redis_py_subscribers():
    """Every documented snippet that subscribes with plain redis-py: (where, code)."""
    for path in DOCS:
        for i, block in enumerate(_blocks(path, ("python",))):
            if ".pubsub(" in block:
                yield f"{path.relative_to(ROOT)}#{i}", block
    for path in sorted((ROOT / "livedata_core").rglob("*.py")):
        for i, block in enumerate(_docstring_blocks(path)):
            if ".pubsub(" in block:
                yield f"{path.relative_to(ROOT)}#{i}", block


SUBSCRIBERS = list(_redis_py_subscribers())

# Runs a snippet as written; only the address of the default `redis.Redis()` is moved to the test's server.
_RUN_SNIPPET = """
import sys, redis
port, where, code = int(sys.argv[1]), sys.argv[2], sys.stdin.read()

class Redis(redis.Redis):
    def __init__(self, *args, **kwargs):
        kwargs.setdefault("port", port)
        super().__init__(*args, **kwargs)

redis.Redis = Redis
exec(compile(code, where, "exec"), {"__name__": "__main__"})
"""


def test_the_plain_redis_py_snippet_is_shown_where_consumers_look():
    places = {where.split("#")[0] for where, _ in SUBSCRIBERS}
    assert {"README.md", "livedata_core/redis_io/subscriber.py"} <= places
    for where, code in SUBSCRIBERS:
        # Says why: the subscribe confirmation (data is an int) must not reach json.loads.
        assert "ignore_subscribe_messages=True" in code or 'message["type"]' in code, where
        assert "confirmation" in code, f"{where} does not say why the subscribe confirmation is skipped"


@pytest.mark.parametrize("where, code", SUBSCRIBERS, ids=[where for where, _ in SUBSCRIBERS])
def test_the_documented_redis_py_snippet_parses_a_published_quote(where, code, private_redis):
    import subprocess
    import sys
    import time

    import redis

    proc = subprocess.Popen([sys.executable, "-u", "-c", _RUN_SNIPPET, str(private_redis.port), where],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    proc.stdin.write(code)
    proc.stdin.close()
    publisher = redis.Redis(port=private_redis.port)
    try:
        quote = b'{"broker": "demo", "symbol": "AAPL", "bid": 1.5, "ask": 1.6, "last": 1.55}'
        deadline = time.monotonic() + 20
        while publisher.publish("live_data:quotes:AAPL", quote) == 0 and proc.poll() is None:
            assert time.monotonic() < deadline, "the snippet never subscribed"
            time.sleep(0.05)
        line = proc.stdout.readline()  # the snippet's first print, after parsing the quote
        assert "AAPL" in line and "1.5" in line, (line, proc.stderr.read() if proc.poll() is not None else "")
    finally:
        proc.kill()
        proc.wait(10)
        publisher.close()
