"""The conformance suite catches real bugs: broken variants of the example plugin fail it (issue 14, item 6).

Each variant is the installed example plugin with one fault put in at test time (its hooks wrapped, its stream's
class subclassed), so the variants follow the example wherever it goes. They run against the example's own
fixtures (its tests/conftest.py), in one pytest process, each from a directory of its own. A faithful wrapper with
no fault is run the same way and must pass every check the variants fail: the failures come from the faults.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

livedata_example = pytest.importorskip("livedata_example")

EXAMPLE_CONFTEST = Path(livedata_example.__file__).resolve().parents[1] / "tests" / "conftest.py"

# What every variant's conftest starts with: the example's fixtures, and a plugin that is the example's hooks with
# some of them replaced (FAULTS, defined by each variant below).
HEADER = '''
import importlib.util
import types
import uuid

import attrs
import pytest

import livedata_example
from livedata_core import HEARTBEAT, BrokerInfo, Transaction, hookimpl
from livedata_core.errors import AuthError, LivedataError, StreamError
from livedata_core.plugin_kit.hookspecs import BROKER_HOOKS
from livedata_core.testing import registered_plugin
from livedata_core.testing.conformance import secret_setting_values
from livedata_core.plugin_kit.plugins import get_brokers

get_brokers()  # load plugins now, with LIVEDATA_LOAD_PLUGINS="" (the tests' clean environment drops it later)

_spec = importlib.util.spec_from_file_location("example_conftest_{name}", {conftest!r})
_example_conftest = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_example_conftest)
globals().update({{k: v for k, v in vars(_example_conftest).items() if not k.startswith("__")}})

HOOKS = ("broker_info", *BROKER_HOOKS)
EXAMPLE = {{name: getattr(livedata_example, name) for name in HOOKS if hasattr(livedata_example, name)}}


def secrets_of(ctx):
    found = secret_setting_values(ctx.settings)
    try:
        found += list(ctx.credentials().values())
    except Exception:
        pass
    return [s for s in found if s]


def broken_stream(ctx, connect=None, **methods):
    """The example's stream with connect() replaced by connect(original, ctx, self), and other methods by
    method(original, self, *args)."""
    stream = EXAMPLE["stream"](ctx=ctx)
    base = type(stream)
    replaced = {{name: (lambda f, o: lambda self, *a: f(o, self, *a))(f, getattr(base, name)) for name, f in methods.items()}}
    if connect is not None:
        replaced["connect"] = lambda self: connect(base.connect, ctx, self)
    stream.__class__ = type("Broken" + base.__name__, (base,), replaced)
    return stream


async def transactions(ctx, account_id, since, make_id):
    """A few transactions of the account (the example's own, or made here from its positions)."""
    if "fetch_transactions" in EXAMPLE:
        rows = await _call("fetch_transactions", ctx=ctx, account_id=account_id, since=since)
        return [attrs.evolve(t, transaction_id=make_id(t.transaction_id)) for t in rows]
    positions = await _call("fetch_positions", ctx=ctx, account_id=account_id)
    return [Transaction(broker=p.broker, account_id=account_id, transaction_id=make_id(f"T-{{p.symbol}}"),
                        type="trade", symbol=p.symbol, quantity=p.quantity) for p in positions]


async def _call(hook, **kwargs):
    import inspect

    result = EXAMPLE[hook](**{{k: v for k, v in kwargs.items() if k in inspect.signature(EXAMPLE[hook]).parameters}})
    return await result if inspect.isawaitable(result) else result


FAULTS = {{}}
{faults}

def _plugin():
    module = types.ModuleType("livedata_example_variant_{name}")
    for hook, func in {{**EXAMPLE, **FAULTS}}.items():
        setattr(module, hook, func if hasattr(func, "livedata_impl") else hookimpl(func))
    return module


@pytest.fixture
def conformance_broker():
    with registered_plugin(_plugin()):
        yield "example"
{fixtures}
'''

WITH_TRANSACTIONS = '''
def _info():
    info = EXAMPLE["broker_info"]()
    return attrs.evolve(info, capabilities=info.capabilities | {"fetch_transactions"})
FAULTS["broker_info"] = _info
'''

SEEDED = '''
@pytest.fixture
def conformance_seed():
    # The example's exchange holds positions and a balance for its test account from the start.
    return lambda kind, account_id: None
'''

VARIANTS: dict[str, tuple[str, str]] = {
    # A faithful wrapper: no fault, stable transaction ids. Must pass everything the others fail.
    "faithful": (WITH_TRANSACTIONS + '''
async def _stable(ctx, account_id, since):
    return await transactions(ctx, account_id, since, lambda i: i)
FAULTS["fetch_transactions"] = _stable
''', SEEDED),
    # connect() lets the socket's ConnectionRefusedError out instead of StreamError.
    "raw_connect_error": ('''
async def _connect(original, ctx, self):
    try:
        await original(self)
    except LivedataError:
        raise ConnectionRefusedError(111, "Connect call failed") from None
FAULTS["stream"] = lambda ctx: broken_stream(ctx, _connect)
''', ""),
    # A stream login the broker refuses comes out as a StreamError (reconnect) instead of AuthError (log in again).
    "login_as_stream_error": ('''
async def _connect(original, ctx, self):
    try:
        await original(self)
    except AuthError as exc:
        raise StreamError(f"stream closed: {exc}") from None
FAULTS["stream"] = lambda ctx: broken_stream(ctx, _connect)
''', ""),
    # The API key inside the stream's error message.
    "key_in_stream_error": ('''
async def _connect(original, ctx, self):
    try:
        await original(self)
    except LivedataError as exc:
        raise type(exc)(f"{exc} (connecting with {', '.join(secrets_of(ctx))})") from None
FAULTS["stream"] = lambda ctx: broken_stream(ctx, _connect)
''', ""),
    # A new uuid per poll for each transaction id.
    "uuid_transaction_ids": (WITH_TRANSACTIONS + '''
async def _uuids(ctx, account_id, since):
    return await transactions(ctx, account_id, since, lambda i: str(uuid.uuid4()))
FAULTS["fetch_transactions"] = _uuids
''', SEEDED),
    # Every fetch of account data returns an empty list (as with the seeder, which says data is there).
    "empty_lists": ('''
for _hook in ("fetch_positions", "fetch_balances", "fetch_orders", "fetch_transactions"):
    if _hook in EXAMPLE:
        FAULTS[_hook] = lambda ctx, account_id, since=0: []
''', SEEDED),
    # The same, without a seeder: the checks must be skipped saying why, never passed.
    "empty_lists_unseeded": ('''
for _hook in ("fetch_positions", "fetch_balances", "fetch_orders", "fetch_transactions"):
    if _hook in EXAMPLE:
        FAULTS[_hook] = lambda ctx, account_id, since=0: []
''', ""),
    # Heartbeats from the broker are read but not yielded: a quiet stream looks dead to the runner.
    "drops_heartbeats": ('''
async def _events(original, self):
    async for item in original(self):
        if item is not HEARTBEAT:
            yield item
FAULTS["stream"] = lambda ctx: broken_stream(ctx, events=_events)
''', ""),
    # Only the first subscribe() of a connection is sent: symbols added while events() is read never quote.
    "subscribe_once": ('''
async def _subscribe(original, self, symbols):
    if getattr(self, "_subscribed_once", False):
        return
    self._subscribed_once = True
    await original(self, symbols)
FAULTS["stream"] = lambda ctx: broken_stream(ctx, subscribe=_subscribe)
''', ""),
    # An account it does not have answered with another account's data, relabelled.
    "relabelled_account": ('''
def _relabelled(hook):
    async def fetch(ctx, account_id, since=0):
        try:
            return await _call(hook, ctx=ctx, account_id=account_id, since=since)
        except LivedataError:
            accounts = await _call("fetch_accounts", ctx=ctx)
            rows = await _call(hook, ctx=ctx, account_id=accounts[0].account_id, since=since)
            return [attrs.evolve(row, account_id=account_id) for row in rows]
    return fetch
for _hook in ("fetch_positions", "fetch_balances", "fetch_orders", "fetch_transactions"):
    if _hook in EXAMPLE and "fetch_accounts" in EXAMPLE:
        FAULTS[_hook] = _relabelled(_hook)
''', ""),
}

CHECKS = ("TC_Q03", "TC_Q05", "TC_ERR_01", "TC_ERR_03", "TC_ERR_04", "TC_ACC_02", "TC_ACC_03", "TC_ACC_05", "TC_ACC_06", "TC_SEC_02")

# What the suite must say about each variant (variant -> check -> outcome).
EXPECTED = {
    "raw_connect_error": {"TC_ERR_03": "FAILED"},
    "login_as_stream_error": {"TC_ERR_04": "FAILED"},
    "key_in_stream_error": {"TC_ERR_03": "FAILED", "TC_ERR_04": "FAILED"},
    "uuid_transaction_ids": {"TC_ACC_06": "FAILED", "TC_ACC_05": "PASSED"},
    "empty_lists": {"TC_ACC_02": "FAILED", "TC_ACC_03": "FAILED"},
    "empty_lists_unseeded": {"TC_ACC_02": "SKIPPED", "TC_ACC_03": "SKIPPED"},
    "relabelled_account": {"TC_ERR_01": "FAILED"},
    "drops_heartbeats": {"TC_Q05": "FAILED"},
    "subscribe_once": {"TC_Q03": "FAILED"},
}


def _selection() -> str:
    """pytest -k: every check for the faithful wrapper, for each variant the checks it must fail."""
    wanted = {"faithful": CHECKS, **{variant: tuple(checks) for variant, checks in EXPECTED.items()}}
    return " or ".join(f"(TestVariant_{variant} and ({' or '.join(checks)}))" for variant, checks in wanted.items())


@pytest.fixture(scope="module")
def outcomes(tmp_path_factory) -> tuple[dict[str, dict[str, str]], str]:
    root = tmp_path_factory.mktemp("variants")
    for name, (faults, fixtures) in VARIANTS.items():
        folder = root / name
        folder.mkdir()
        (folder / "conftest.py").write_text(HEADER.format(name=name, conftest=str(EXAMPLE_CONFTEST),
                                                          faults=textwrap.dedent(faults), fixtures=fixtures))  # fmt: skip
        (folder / f"test_variant_{name}.py").write_text(
            "from livedata_core.testing.conformance import ConformanceSuite\n\n\n"
            f"class TestVariant_{name}(ConformanceSuite):\n    pass\n"
        )
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LIVEDATA_", "PYTEST_"))}
    env["LIVEDATA_LOAD_PLUGINS"] = ""  # the example is registered by each variant's fixture only
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "livedata_core.testing", "-p", "no:cacheprovider", "-v", "-rfs",
         "--rootdir", str(root), "-k", _selection(), str(root)],
        cwd=root, env=env, capture_output=True, text=True, timeout=600,
    )
    found: dict[str, dict[str, str]] = {}
    pattern = r"^\S*?::TestVariant_(\w+?)::test_(TC_[A-Z]+_?\d+)_\w* (PASSED|FAILED|SKIPPED|ERROR)"
    for variant, check, outcome in re.findall(pattern, result.stdout, re.M):
        found.setdefault(variant, {})[check] = outcome
    return found, result.stdout


def test_a_faithful_wrapper_passes_every_check(outcomes):
    found, out = outcomes
    faithful = found.get("faithful", {})
    for check in CHECKS:
        assert faithful.get(check) == "PASSED", f"faithful {check}: {faithful.get(check)}\n{out[-6000:]}"


@pytest.mark.parametrize("variant", sorted(EXPECTED))
def test_the_suite_fails_a_broken_variant(outcomes, variant):
    found, out = outcomes
    for check, expected in EXPECTED[variant].items():
        assert found.get(variant, {}).get(check) == expected, (
            f"{variant} {check}: {found.get(variant, {}).get(check)}, expected {expected}\n{out[-8000:]}"
        )


def test_failures_say_what_is_wrong(outcomes):
    _, out = outcomes
    assert "the stream's connect() raised builtins.ConnectionRefusedError" in out
    assert "the stream's connect() raised StreamError" in out and "expected AuthError" in out
    assert "contains a secret" in out
    assert "ids of the first poll are not in the second" in out
    assert "after conformance_seed('positions') made the fake server hold some" in out
    assert "returned no positions, so nothing was checked" in out
    assert "for an account the broker does not have" in out
    assert "nothing from events() for" in out and "with no symbol subscribed" in out
    assert "of subscribing them while events() was read" in out
