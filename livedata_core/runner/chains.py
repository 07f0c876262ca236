"""Option chains of one instance (``livedata subscribe --chain``): the contracts the broker's ``option_chain`` hook
names for an underlying, subscribed as quotes through the instance's
:class:`~livedata_core.runner.broker_runtime.BrokerRuntime`, and what status shows of them.

A chain remembers which of its contracts it subscribed itself (``added``: not subscribed before it, nor asked for by
the user since); only those are unsubscribed when the chain is replaced or dropped, and never one another chain has.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from ..errors import ConfigError, NotSupported, PluginError, SymbolsRefused

__all__ = ["MAX_CHAIN_STRIKES", "OptionChains"]

MAX_CHAIN_STRIKES = 500


class OptionChains:
    """The option chains of one instance: underlying -> what was asked, the contracts and those the chain added.

    :param rt: the instance's :class:`~livedata_core.runner.broker_runtime.BrokerRuntime` (not imported here: it
        imports this module), whose subscriptions the chains go through.
    """

    def __init__(self, rt: Any) -> None:
        self.rt = rt
        self.chains: dict[str, dict[str, Any]] = {}

    def user_subscribed(self, symbols: Iterable[str]) -> None:
        """``symbols`` were asked for by the user: no chain unsubscribes them any more."""
        symbols = set(symbols)
        for chain in self.chains.values():
            chain["added"].difference_update(symbols)

    async def chain(self, underlying: str, expiration: str | None = None, strikes: int | None = None) -> dict[str, Any]:
        """Subscribe the quotes of an option chain: the contracts the broker's ``option_chain`` hook names for
        ``underlying`` (one ``expiration``, an ISO date, or all; ``strikes`` around the money, or the broker's
        default). The chain is shown in status; asking again for the same underlying replaces it, unsubscribing the old
        chain's contracts the new one does not name. Contracts the streamer refuses are left out and named in the
        answer (``refused``); when it refuses them all, the ``SymbolsRefused`` is raised.

        :raises SymbolsRefused: the broker does not know the underlying (or has no options on it).
        :raises NotSupported: the broker has no option chains.
        """
        rt = self.rt
        if not rt.broker.has("option_chain"):
            raise NotSupported(f"{rt.name} (plugin {rt.broker.name!r}) cannot resolve option chains")
        rt._check_kind("quotes")
        (underlying,) = rt.normalize([underlying])
        if expiration is not None and _check_expiration(expiration):
            raise ConfigError(f"expiration {expiration!r} is not a date such as 2026-12-18")
        if strikes is not None and (isinstance(strikes, bool) or not isinstance(strikes, int)
                                    or not 1 <= strikes <= MAX_CHAIN_STRIKES):  # fmt: skip
            raise ConfigError(f"strikes must be a whole number from 1 to {MAX_CHAIN_STRIKES}, was {strikes!r}")
        await rt.ensure_authenticated()
        contracts = await rt.broker.call("option_chain", ctx=rt.ctx, underlying=underlying, expiration=expiration,
                                           strikes=strikes)  # fmt: skip
        if not isinstance(contracts, (list, tuple)) or not all(isinstance(c, str) for c in contracts):
            raise PluginError(f"option_chain of {rt.broker.name!r} returned {type(contracts).__name__}, not a list of symbols")
        if not contracts:
            raise SymbolsRefused(f"{rt.name} found no option contracts for {underlying}"
                                 + (f" expiring {expiration}" if expiration else ""), [underlying])  # fmt: skip
        contracts = rt.normalize(contracts)
        previous = self.chains.get(underlying)
        refused: list[str] = []
        before = set(rt.symbols)
        try:
            result = await rt._subscribe_kind(contracts, "quotes", chained=True)
        except SymbolsRefused as exc:
            # Some contracts refused (the others are subscribed and stay): the chain is the rest, said in the answer.
            refused = [c for c in contracts if c in set(exc.symbols)]
            if len(refused) == len(contracts):
                raise
            rt.log.warning("chain %s: %d of %d contracts refused: %s", underlying, len(refused), len(contracts), exc)
            contracts = [c for c in contracts if c not in set(refused)]
            result = {"added": [c for c in contracts if c not in before], "already": [c for c in contracts if c in before]}
        added = set(result["added"])
        if previous is not None:
            # Carried over: contracts the old chain subscribed that this one names again.
            added.update(c for c in previous["added"] if c in set(contracts))
            kept = set(contracts)
            for other, chain in self.chains.items():
                if other != underlying:
                    kept.update(chain["contracts"])
            dropped = [c for c in previous["contracts"] if c in previous["added"] and c not in kept]
            if dropped:
                await rt.unsubscribe(dropped)
        self.chains[underlying] = {"expiration": expiration, "strikes": strikes, "contracts": contracts, "added": added}
        return {"underlying": underlying, "contracts": contracts, **result, "refused": refused}

    async def unchain(self, underlying: str) -> dict[str, Any]:
        """Unsubscribe the contracts the chain subscribed (not those another chain has or the user subscribed) and
        forget it."""
        rt = self.rt
        (underlying,) = rt.normalize([underlying])
        chain = self.chains.pop(underlying, None)
        if chain is None:
            raise ConfigError(f"{rt.name} has no chain of {underlying!r}; chains: {', '.join(sorted(self.chains)) or 'none'}")
        others = {c for other in self.chains.values() for c in other["contracts"]}
        result = await rt.unsubscribe([c for c in chain["contracts"] if c in chain["added"] and c not in others])
        return {"underlying": underlying, **result}

    def status(self) -> dict[str, dict[str, Any]]:
        """What ``livedata status`` shows of each chain."""
        return {u: {"expiration": c["expiration"], "strikes": c["strikes"], "contracts": len(c["contracts"])}
                for u, c in sorted(self.chains.items())}  # fmt: skip


def _check_expiration(value: Any) -> str | None:
    from ..models import _check_expiration as check

    return check("expiration", value)
