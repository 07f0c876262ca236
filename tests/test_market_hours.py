"""Market sessions per symbol class and US exchange holidays, computed by rule."""

import datetime as dt
from zoneinfo import ZoneInfo

import pytest

from livedata_core.errors import ConfigError
from livedata_core.runner.ops.market_hours import (
    BUILTIN_CLASSES, SessionMap, default_class, easter, parse_classes, us_early_closes, us_holidays,
)

NY = ZoneInfo("America/New_York")
CHICAGO = ZoneInfo("America/Chicago")


def at(zone, *parts):
    return dt.datetime(*parts, tzinfo=zone).timestamp()


@pytest.mark.parametrize("year, expected", [
    (2024, ["01-01", "01-15", "02-19", "03-29", "05-27", "06-19", "07-04", "09-02", "11-28", "12-25"]),
    (2025, ["01-01", "01-20", "02-17", "04-18", "05-26", "06-19", "07-04", "09-01", "11-27", "12-25"]),
    (2026, ["01-01", "01-19", "02-16", "04-03", "05-25", "06-19", "07-03", "09-07", "11-26", "12-25"]),
    # New Year's Day on a Saturday is not observed; Juneteenth and Christmas on a Sunday move to Monday.
    (2022, ["01-17", "02-21", "04-15", "05-30", "06-20", "07-04", "09-05", "11-24", "12-26"]),
    # Before Juneteenth; Independence Day on a Sunday -> Monday; Christmas on a Saturday -> Friday.
    (2021, ["01-01", "01-18", "02-15", "04-02", "05-31", "07-05", "09-06", "11-25", "12-24"]),
    (2027, ["01-01", "01-18", "02-15", "03-26", "05-31", "06-18", "07-05", "09-06", "11-25", "12-24"]),
])
def test_us_holidays_follow_the_exchange_rules(year, expected):
    assert sorted(d.strftime("%m-%d") for d in us_holidays(year)) == expected


def test_a_saturday_new_year_leaves_new_years_eve_open():
    assert dt.date(2021, 12, 31) not in us_holidays(2021)
    assert dt.date(2022, 1, 1) not in us_holidays(2022)
    assert us_holidays(2022).get(dt.date(2022, 12, 26)) == "Christmas Day"


@pytest.mark.parametrize("year, day", [(2024, (3, 31)), (2025, (4, 20)), (2026, (4, 5)), (2000, (4, 23)),
                                       (2038, (4, 25)), (2285, (3, 22)), (1943, (4, 25))])
def test_easter(year, day):
    assert easter(year) == dt.date(year, *day)


@pytest.mark.parametrize("year, expected", [
    (2024, ["07-03", "11-29", "12-24"]),
    (2025, ["07-03", "11-28", "12-24"]),
    (2026, ["11-27", "12-24"]),  # 3 July 2026 is the observed Independence Day
    (2022, ["11-25"]),  # 24 December 2022 is a Saturday
])
def test_early_closes(year, expected):
    assert sorted(d.strftime("%m-%d") for d in us_early_closes(year)) == expected


def test_us_equity_regular_session():
    equity = BUILTIN_CLASSES["us_equity"]
    assert equity.session_start(at(NY, 2024, 6, 12, 10, 0)) == at(NY, 2024, 6, 12, 9, 30)
    assert not equity.is_open(at(NY, 2024, 6, 12, 9, 29))
    assert not equity.is_open(at(NY, 2024, 6, 12, 16, 0))
    assert not equity.is_open(at(NY, 2024, 6, 15, 12, 0))  # Saturday
    assert not equity.is_open(at(NY, 2024, 3, 29, 11, 0))  # Good Friday
    assert equity.is_open(at(NY, 2024, 7, 3, 12, 59))
    assert not equity.is_open(at(NY, 2024, 7, 3, 13, 0))  # early close
    # Daylight saving time: the Monday after the change opens at 13:30 UTC, in winter at 14:30 UTC.
    assert equity.session_start(at(NY, 2024, 3, 11, 12, 0)) == dt.datetime(2024, 3, 11, 13, 30, tzinfo=dt.UTC).timestamp()
    assert equity.session_start(at(NY, 2024, 1, 10, 12, 0)) == dt.datetime(2024, 1, 10, 14, 30, tzinfo=dt.UTC).timestamp()


def test_us_equity_extended_hours():
    extended = BUILTIN_CLASSES["us_equity_extended"]
    assert extended.is_open(at(NY, 2024, 6, 12, 4, 0))
    assert extended.is_open(at(NY, 2024, 6, 12, 19, 59))
    assert not extended.is_open(at(NY, 2024, 6, 12, 20, 0))
    assert not extended.is_open(at(NY, 2024, 11, 29, 17, 30))  # the day after Thanksgiving ends at 17:00


def test_cme_futures_nearly_24_5():
    cme = BUILTIN_CLASSES["cme_futures"]
    assert cme.session_start(at(CHICAGO, 2024, 6, 9, 18, 0)) == at(CHICAGO, 2024, 6, 9, 17, 0)  # Sunday evening
    assert cme.session_start(at(CHICAGO, 2024, 6, 10, 10, 0)) == at(CHICAGO, 2024, 6, 9, 17, 0)
    assert not cme.is_open(at(CHICAGO, 2024, 6, 10, 16, 30))  # the daily halt
    assert cme.session_start(at(CHICAGO, 2024, 6, 11, 10, 0)) == at(CHICAGO, 2024, 6, 10, 17, 0)
    assert not cme.is_open(at(CHICAGO, 2024, 6, 14, 16, 30))  # Friday after the close
    assert not cme.is_open(at(CHICAGO, 2024, 6, 15, 12, 0))  # Saturday
    assert not cme.is_open(at(CHICAGO, 2024, 3, 28, 18, 0))  # the session trading for Good Friday


def test_forex_is_one_session_from_sunday_to_friday():
    forex = BUILTIN_CLASSES["forex"]
    assert forex.session_start(at(NY, 2024, 6, 12, 3, 0)) == at(NY, 2024, 6, 9, 17, 0)
    assert forex.is_open(at(NY, 2024, 12, 25, 12, 0))  # no holidays
    assert not forex.is_open(at(NY, 2024, 6, 14, 17, 30))
    assert not forex.is_open(at(NY, 2024, 6, 15, 12, 0))


def test_always_is_always_open():
    always = BUILTIN_CLASSES["always"]
    now = at(NY, 2024, 6, 15, 3, 0)
    assert always.is_open(now) and now - always.session_start(now) >= 6 * 86400


def test_classes_are_configurable():
    classes = parse_classes({
        "us_equity": {"closed": ["2025-01-09"]},  # a national day of mourning: no rule knows it
        "lse": {"timezone": "Europe/London", "days": ["mon", "tue", "wed", "thu", "fri"], "open": "08:00",
                "close": "16:30", "holidays": "none"},
    })
    assert not classes["us_equity"].is_open(at(NY, 2025, 1, 9, 11, 0))
    assert classes["us_equity"].is_open(at(NY, 2025, 1, 10, 11, 0))
    london = ZoneInfo("Europe/London")
    assert classes["lse"].session_start(at(london, 2024, 6, 12, 9, 0)) == at(london, 2024, 6, 12, 8, 0)


@pytest.mark.parametrize("table, message", [
    ({"us_equity": {"open": "9:30"}}, 'market_hours.us_equity.open must be a time as "HH:MM"'),
    ({"us_equity": {"days": ["monday"]}}, "market_hours.us_equity.days: 'monday' is not a day"),
    ({"us_equity": {"timezone": "Mars/Olympus"}}, "market_hours.us_equity.timezone: unknown timezone 'Mars/Olympus'"),
    ({"us_equity": {"holidays": "uk"}}, "market_hours.us_equity.holidays must be one of us, none"),
    ({"us_equity": {"closed": ["2025-13-01"]}}, "market_hours.us_equity.closed: '2025-13-01' is not a date"),
    ({"us_equity": {"opens": "09:30"}}, "[market_hours.us_equity]: unknown key(s): opens"),
    ({"lse": {"open": "08:00"}}, "[market_hours.lse] is a new class"),
])
def test_bad_classes_are_refused_naming_the_key(table, message):
    with pytest.raises(ConfigError) as info:
        parse_classes(table)
    assert message in str(info.value)


def test_symbols_get_their_class_by_pattern_then_by_shape():
    sessions = SessionMap([("BTC*", "always"), ("SPY", "us_equity_extended")])
    assert sessions.class_of("BTCUSD").name == "always"
    assert sessions.class_of("SPY").name == "us_equity_extended"
    assert sessions.class_of("/ESZ24").name == "cme_futures"
    assert sessions.class_of("EUR/USD").name == "forex"
    assert sessions.class_of("AAPL  241220C00150000").name == "us_equity"
    assert default_class("$SPX") == "us_equity"
    with pytest.raises(ConfigError, match=r"brokers.demo.market_hours.'\*': no session class 'nyse'"):
        SessionMap([("*", "nyse")], where="brokers.demo.market_hours")
