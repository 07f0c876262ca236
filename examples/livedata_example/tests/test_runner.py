"""End to end: the core Runner drives the Example plugin against a live exchange into a private Redis."""

import asyncio

from livedata_core.runner import Runner, load_config
from livedata_core.testing import running


def test_runner_publishes_quotes_positions_and_balances(exchange, tokens, published, redis_url):
    table = {
        "url": exchange.url,
        "symbols": ["aapl"],
        "accounts": ["ACC-1"],
        "poll": {"positions": 0.2, "balances": 0.2},
    }
    config = load_config({"redis": {"url": redis_url}, "brokers": {"example": table}}, env={})

    async def scenario():
        async with running(Runner(config, token_store=tokens)):
            # Trades and quotes arrive apart; once both came, each quote carries both (the merge book).
            quotes = await published.wait_for_async("quotes", "AAPL", where=lambda q: None not in (q.bid, q.last))
            positions = await published.wait_for_async("positions", "ACC-1")
            balances = await published.wait_for_async("balances", "ACC-1")
        return quotes[0], positions[0], balances[0]

    quote, position, balance = asyncio.run(scenario())
    assert quote.broker == "example" and quote.bid < quote.ask and quote.volume > 0
    assert (position.symbol, position.quantity, position.average_price) == ("AAPL", 10.0, 150.0)
    assert (balance.cash, balance.currency) == (1000.0, "USD")
