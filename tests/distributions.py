"""Build small plugin distributions on disk, exactly as pip leaves an installed one (module + dist-info)."""

from __future__ import annotations

import textwrap
from pathlib import Path


def make_distribution(root: Path, dist: str, module: str, source: str, entry_name: str, version: str = "1.2.3") -> Path:
    """Write ``module.py`` and ``<dist>-<version>.dist-info`` with a ``livedata`` entry point under ``root``."""
    root.mkdir(parents=True, exist_ok=True)
    (root / f"{module}.py").write_text(textwrap.dedent(source))
    info = root / f"{dist.replace('-', '_')}-{version}.dist-info"
    info.mkdir(exist_ok=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: {version}\n")
    (info / "entry_points.txt").write_text(f"[livedata]\n{entry_name} = {module}\n")
    (info / "RECORD").write_text("")
    return root


GOOD = '''
from livedata_core import BrokerInfo, Position, hookimpl

@hookimpl
def broker_info():
    return BrokerInfo(name="acme", capabilities={"fetch_positions"}, description="Acme test broker")

@hookimpl
def fetch_positions(ctx, account_id):
    return [Position(broker="acme", account_id=account_id, symbol="AAPL", quantity=1.0)]
'''

BROKEN_IMPORT = '''
raise RuntimeError("acme-broken needs a library that is not installed")
'''

MISSPELLED = '''
from livedata_core import BrokerInfo, hookimpl

@hookimpl
def broker_info():
    return BrokerInfo(name="typo", capabilities=set())

@hookimpl
def fetch_postions(ctx, account_id):
    return []
'''

DUPLICATE = '''
from livedata_core import BrokerInfo, hookimpl

@hookimpl
def broker_info():
    return BrokerInfo(name="acme", capabilities=set())
'''

UNDECLARED = '''
from livedata_core import BrokerInfo, hookimpl

@hookimpl
def broker_info():
    return BrokerInfo(name="sneaky", capabilities={"fetch_orders"})

@hookimpl
def fetch_orders(ctx, account_id, since):
    return []

@hookimpl
def fetch_balances(ctx, account_id):
    return []
'''

BURST = '''
import asyncio, os
import attrs
from livedata_core import HEARTBEAT, BrokerInfo, BrokerStream, Order, hookimpl

@attrs.frozen
class BurstSettings:
    trigger: str
    emitted: str
    count: int = 2000

class BurstStream(BrokerStream):
    heartbeat_timeout = 30.0

    def __init__(self, settings):
        super().__init__()
        self.settings = settings

    async def connect(self):
        pass

    async def events(self):
        done = False
        while True:
            if not done and os.path.exists(self.settings.trigger):
                yield [Order(broker="burst", account_id="B1", order_id=str(i), status="filled") for i in range(self.settings.count)]
                done = True
                open(self.settings.emitted, "w").close()
            yield HEARTBEAT
            await asyncio.sleep(0.02)

@hookimpl
def broker_info():
    return BrokerInfo(name="burst", capabilities={"stream"}, settings_cls=BurstSettings)

@hookimpl
def stream(ctx):
    return BurstStream(ctx.settings)
'''
