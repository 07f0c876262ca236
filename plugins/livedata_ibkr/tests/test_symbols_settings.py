import pytest

from livedata_core.errors import ConfigError, InvalidIdentifier
from livedata_core.channels import channel


def test_symbol_forms_are_normalised_and_channel_safe(ibkr):
    assert ibkr.normalize_symbol(" aapl ") == "AAPL"
    assert ibkr.normalize_symbol("aapl@265598") == "AAPL@265598"
    assert ibkr.normalize_symbol("@8314") == "@8314"
    assert ibkr.normalize_symbol("brk b") == "BRK B"
    assert channel("quotes", ibkr.normalize_symbol("AAPL@265598")) == "live_data:quotes:AAPL@265598"


@pytest.mark.parametrize("bad", ["", "@", "AAPL@", "AAPL@12x", "AA*PL", "@abc", "A@1@2", "conid:265598"])
def test_bad_symbols_are_refused_with_the_syntax(ibkr, bad):
    with pytest.raises(InvalidIdentifier, match="AAPL@265598|conid"):
        ibkr.normalize_symbol(bad)


def test_websocket_url_is_derived_from_base_url(ibkr):
    ctx = ibkr.make_context({"base_url": "https://127.0.0.1:5001/v1/api/"})
    assert ctx.settings.websocket_url == "wss://127.0.0.1:5001/v1/api/ws"
    ctx = ibkr.make_context({"base_url": "http://localhost:5000/v1/api"})
    assert ctx.settings.websocket_url == "ws://localhost:5000/v1/api/ws"


@pytest.mark.parametrize("host", ["localhost", "127.0.0.1", "[::1]", "127.0.0.2"])
def test_self_signed_allowed_for_loopback(ibkr, host):
    ctx = ibkr.make_context({"base_url": f"https://{host}:5000/v1/api", "allow_self_signed": True})
    assert ctx.settings.allow_self_signed


@pytest.mark.parametrize(
    "table",
    [
        {"base_url": "https://gateway.example.com:5000/v1/api", "allow_self_signed": True},
        {"base_url": "https://10.0.0.5:5000/v1/api", "allow_self_signed": True},
        {"ws_url": "wss://gateway.example.com/v1/api/ws", "allow_self_signed": True},
    ],
)
def test_self_signed_refused_for_remote_hosts(ibkr, table):
    with pytest.raises(ConfigError, match="allow_self_signed is only allowed"):
        ibkr.make_context(table)


def test_unknown_setting_is_named(ibkr):
    with pytest.raises(ConfigError, match="tickle_intervall"):
        ibkr.make_context({"tickle_intervall": 5})


@pytest.mark.parametrize(
    "table, key",
    [
        ({"base_url": "http://gateway.example.com:5000/v1/api"}, "base_url"),
        ({"base_url": "http://10.0.0.5:5000/v1/api", "ca_bundle": "/x.pem"}, "base_url"),
        ({"ws_url": "ws://gateway.example.com:5000/v1/api/ws"}, "ws_url"),
        ({"base_url": "https://gateway.example.com/v1/api", "ws_url": "ws://gateway.example.com/v1/api/ws"}, "ws_url"),
    ],
)
def test_plain_http_or_ws_to_another_host_is_refused(ibkr, table, key):
    # The gateway session (cookie, websocket session) would cross the network unencrypted.
    with pytest.raises(ConfigError, match=rf"\[brokers.ibkr\]: {key} .* unencrypted .* this machine"):
        ibkr.make_context(table)


@pytest.mark.parametrize("host", ["localhost", "127.0.0.1", "[::1]", "127.0.0.2"])
def test_plain_http_to_this_machine_is_allowed(ibkr, host):
    ctx = ibkr.make_context({"base_url": f"http://{host}:5000/v1/api"})
    assert ctx.settings.websocket_url == f"ws://{host}:5000/v1/api/ws"


@pytest.mark.parametrize("value", [600, 600.0, 3600])
def test_renew_interval_must_be_below_the_ten_minute_subscription_lifetime(ibkr, value):
    with pytest.raises(ConfigError, match="renew_interval must be below 600 seconds"):
        ibkr.make_context({"renew_interval": value})
    assert ibkr.make_context({"renew_interval": 599}).settings.renew_interval == 599.0


def test_gateway_urls_with_credentials_are_masked_in_errors():
    from livedata_core.plugin_kit.plugins import get_broker

    with pytest.raises(ConfigError) as error:
        get_broker("ibkr").make_context({"base_url": "http://user:S3CRET@10.0.0.5:5000/v1/api"})
    assert "unencrypted" in str(error.value) and "S3CRET" not in str(error.value)
