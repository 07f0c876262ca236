"""When a symbol's market is open: trading sessions per symbol class, and US exchange holidays computed by rule.

The staleness watch (:mod:`livedata_core.runner.ops.staleness`) raises no alarm for a symbol whose session is closed, and
counts a symbol's silence from no earlier than the start of its current session.

**Sessions.** A :class:`SessionClass` opens on each of its ``days`` at ``open`` (local time of its ``timezone``) and
closes at ``close`` the same day, or the next day when ``close`` is not after ``open`` (``open == close``: 24 hours).
A session belongs to the date it ends on (its *trade date*): the CME session that opens Sunday 17:00 Chicago time
trades for Monday. Sessions that follow each other without a gap (forex) count as one.

Built-in classes (:data:`BUILTIN_CLASSES`):

======================  =======================================================================================
``us_equity``           New York, Monday to Friday 09:30-16:00; US holidays closed; 13:00 close on early-close days
``us_equity_extended``  New York, Monday to Friday 04:00-20:00; US holidays closed; 17:00 on early-close days
``cme_futures``         Chicago, Sunday 17:00 to Friday 16:00 with the daily 16:00-17:00 halt; closed on US holidays
``forex``               New York, Sunday 17:00 to Friday 17:00; no holidays
``always``              every day, all day (crypto)
======================  =======================================================================================

**US exchange holidays** (:func:`us_holidays`), as NYSE and Nasdaq observe them:

* New Year's Day, 1 January. On a Sunday it is observed on Monday 2 January; on a Saturday it is not observed
  (the exchanges' rule: the Friday before is the last trading day of the year and stays open).
* Martin Luther King Jr. Day, the third Monday of January.
* Washington's Birthday (Presidents' Day), the third Monday of February.
* Good Friday, two days before Easter Sunday (the Gregorian computus).
* Memorial Day, the last Monday of May.
* Juneteenth, 19 June, from 2022.
* Independence Day, 4 July.
* Labor Day, the first Monday of September.
* Thanksgiving Day, the fourth Thursday of November.
* Christmas Day, 25 December.

Except for New Year's Day, a holiday on a Saturday is observed on the Friday before, one on a Sunday on the Monday
after. **Early closes** (:func:`us_early_closes`, 13:00 New York): 3 July and 24 December when each is a weekday and
not itself a holiday, and the day after Thanksgiving.

What no rule can know (a national day of mourning, a closure for a storm) is added per class with ``closed``
dates. CME futures trade shortened sessions on several US holidays: ``cme_futures`` treats every US holiday as
closed, so a quiet contract on such a day raises no alarm (it is never a false one). Timezones come from the
system's time zone database (``zoneinfo``; on Windows install ``tzdata``).
"""

from __future__ import annotations

import datetime as dt
import fnmatch
import re
from collections.abc import Iterable, Mapping
from functools import lru_cache
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import attrs

from ...errors import ConfigError

__all__ = [
    "BUILTIN_CLASSES",
    "DAY_NAMES",
    "SessionClass",
    "SessionMap",
    "default_class",
    "easter",
    "parse_classes",
    "parse_patterns",
    "us_early_closes",
    "us_holidays",
]

DAY_NAMES = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
HOLIDAY_CALENDARS = ("us", "none")
_TIME = re.compile(r"([01]\d|2[0-3]):([0-5]\d)")


# -- holidays ---------------------------------------------------------------------------------------------------


def easter(year: int) -> dt.date:
    """Easter Sunday of ``year`` in the Gregorian calendar (the anonymous Gregorian algorithm, Meeus/Jones/Butcher)."""
    a = year % 19
    b, c = divmod(year, 100)
    d, e = divmod(b, 4)
    f = (b + 8) // 25
    g = (b - f + 1) // 3
    h = (19 * a + b - d - g + 15) % 30
    i, k = divmod(c, 4)
    l = (32 + 2 * e + 2 * i - h - k) % 7  # noqa: E741 - the algorithm's own name
    m = (a + 11 * h + 22 * l) // 451
    month, day = divmod(h + l - 7 * m + 114, 31)
    return dt.date(year, month, day + 1)


def _nth_weekday(year: int, month: int, weekday: int, n: int) -> dt.date:
    """The ``n``-th ``weekday`` (0 = Monday) of a month; ``n = -1``: the last."""
    if n > 0:
        first = dt.date(year, month, 1)
        return first + dt.timedelta(days=(weekday - first.weekday()) % 7 + 7 * (n - 1))
    last = dt.date(year + month // 12, month % 12 + 1, 1) - dt.timedelta(days=1)
    return last - dt.timedelta(days=(last.weekday() - weekday) % 7)


def _observed(day: dt.date) -> dt.date:
    """A fixed-date holiday on a Saturday is observed the Friday before, on a Sunday the Monday after."""
    if day.weekday() == 5:
        return day - dt.timedelta(days=1)
    if day.weekday() == 6:
        return day + dt.timedelta(days=1)
    return day


@lru_cache(maxsize=256)
def us_holidays(year: int) -> dict[dt.date, str]:
    """The days US stock exchanges are closed in ``year`` (observed dates), with the holiday's name.

    The rules are in the module docstring. Only what follows from a rule: closures announced for an event are not
    in it (add them to a session class's ``closed`` dates).
    """
    days: dict[dt.date, str] = {}
    new_year = dt.date(year, 1, 1)
    if new_year.weekday() != 5:  # on a Saturday not observed: 31 December stays a trading day
        days[_observed(new_year)] = "New Year's Day"
    days[_nth_weekday(year, 1, 0, 3)] = "Martin Luther King Jr. Day"
    days[_nth_weekday(year, 2, 0, 3)] = "Washington's Birthday"
    days[easter(year) - dt.timedelta(days=2)] = "Good Friday"
    days[_nth_weekday(year, 5, 0, -1)] = "Memorial Day"
    if year >= 2022:
        days[_observed(dt.date(year, 6, 19))] = "Juneteenth"
    days[_observed(dt.date(year, 7, 4))] = "Independence Day"
    days[_nth_weekday(year, 9, 0, 1)] = "Labor Day"
    days[_nth_weekday(year, 11, 3, 4)] = "Thanksgiving Day"
    days[_observed(dt.date(year, 12, 25))] = "Christmas Day"
    return days


@lru_cache(maxsize=256)
def us_early_closes(year: int) -> frozenset[dt.date]:
    """The days US stock exchanges close early (13:00 New York) in ``year``: 3 July and 24 December when each is a
    weekday and not a holiday, and the day after Thanksgiving."""
    holidays = us_holidays(year)
    days = {_nth_weekday(year, 11, 3, 4) + dt.timedelta(days=1)}
    for day in (dt.date(year, 7, 3), dt.date(year, 12, 24)):
        if day.weekday() < 5 and day not in holidays:
            days.add(day)
    return frozenset(days)


# -- sessions ---------------------------------------------------------------------------------------------------


def _zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ConfigError(f"unknown timezone {name!r}; use an IANA name such as 'America/New_York'") from None


@attrs.frozen
class SessionClass:
    """When the market of one class of symbols is open (see the module docstring for the rules)."""

    name: str
    timezone: str
    days: frozenset[int]
    """Weekdays (0 = Monday) on which a session opens."""
    open: dt.time
    close: dt.time
    """The session ends at this time: the same day if after ``open``, else the next day."""
    holidays: str = "us"
    """``"us"``: closed on :func:`us_holidays` (by trade date); ``"none"``: no holidays."""
    early_close: dt.time | None = None
    """The session ends at this time (if earlier) on :func:`us_early_closes` days."""
    closed: frozenset[dt.date] = frozenset()
    """Further trade dates on which it does not open."""
    zone: ZoneInfo = attrs.field(init=False, eq=False, repr=False)

    def __attrs_post_init__(self) -> None:
        object.__setattr__(self, "zone", _zone(self.timezone))

    def _session(self, start_day: dt.date) -> tuple[dt.datetime, dt.datetime] | None:
        """The session that opens on ``start_day`` as aware datetimes, or ``None`` if none does."""
        if start_day.weekday() not in self.days:
            return None
        end_day = start_day if self.close > self.open else start_day + dt.timedelta(days=1)
        if end_day in self.closed:
            return None
        if self.holidays == "us":
            if end_day in us_holidays(end_day.year):
                return None
            close = self.close
            if self.early_close is not None and end_day in us_early_closes(end_day.year):
                close = min(close, self.early_close) if end_day == start_day else self.early_close
        else:
            close = self.close
        start = dt.datetime.combine(start_day, self.open, self.zone)
        end = dt.datetime.combine(end_day, close, self.zone)
        return (start, end) if end > start else None

    def _containing(self, local: dt.datetime) -> tuple[dt.datetime, dt.datetime] | None:
        for start_day in (local.date(), local.date() - dt.timedelta(days=1)):
            session = self._session(start_day)
            if session is not None and session[0] <= local < session[1]:
                return session
        return None

    def session_start(self, when: float) -> float | None:
        """When (seconds since the epoch) the session open at ``when`` began, or ``None`` if it is closed then.

        Sessions that follow each other without a gap count as one (at most a week back).
        """
        local = dt.datetime.fromtimestamp(when, self.zone)
        session = self._containing(local)
        if session is None:
            return None
        start = session[0]
        for _ in range(7):
            before = self._containing(start - dt.timedelta(microseconds=1))
            if before is None or before[1] != start:
                break
            start = before[0]
        return start.timestamp()

    def is_open(self, when: float) -> bool:
        """Whether the market is open at ``when`` (seconds since the epoch)."""
        return self.session_start(when) is not None


_ALL_DAYS = frozenset(range(7))
_WEEKDAYS = frozenset(range(5))
_SUN_TO_THU = frozenset({6, 0, 1, 2, 3})

BUILTIN_CLASSES: dict[str, SessionClass] = {
    "us_equity": SessionClass("us_equity", "America/New_York", _WEEKDAYS, dt.time(9, 30), dt.time(16, 0),
                              early_close=dt.time(13, 0)),
    "us_equity_extended": SessionClass("us_equity_extended", "America/New_York", _WEEKDAYS, dt.time(4, 0),
                                       dt.time(20, 0), early_close=dt.time(17, 0)),
    "cme_futures": SessionClass("cme_futures", "America/Chicago", _SUN_TO_THU, dt.time(17, 0), dt.time(16, 0)),
    "forex": SessionClass("forex", "America/New_York", _SUN_TO_THU, dt.time(17, 0), dt.time(17, 0), holidays="none"),
    "always": SessionClass("always", "UTC", _ALL_DAYS, dt.time(0, 0), dt.time(0, 0), holidays="none"),
}
"""The session classes every configuration has; ``[market_hours.<name>]`` changes one or adds more."""

_FOREX = re.compile(r"[A-Z]{3}/[A-Z]{3}")


def default_class(symbol: str) -> str:
    """The class of a symbol no configured pattern matches: ``/ES...`` (a leading slash) is ``cme_futures``,
    ``EUR/USD`` (three letters, a slash, three letters) ``forex``, anything else ``us_equity``."""
    if symbol.startswith("/"):
        return "cme_futures"
    if _FOREX.fullmatch(symbol):
        return "forex"
    return "us_equity"


# -- configuration ----------------------------------------------------------------------------------------------


def _time(value: Any, where: str) -> dt.time:
    if not isinstance(value, str) or not _TIME.fullmatch(value):
        raise ConfigError(f"{where} must be a time as \"HH:MM\" (24-hour), was {value!r}")
    hours, minutes = value.split(":")
    return dt.time(int(hours), int(minutes))


def _days(value: Any, where: str) -> frozenset[int]:
    if not isinstance(value, list) or not value or not all(isinstance(v, str) for v in value):
        raise ConfigError(f"{where} must be a list of days such as [\"mon\", \"tue\"], was {value!r}")
    out = set()
    for day in value:
        if day.lower() not in DAY_NAMES:
            raise ConfigError(f"{where}: {day!r} is not a day; use {', '.join(DAY_NAMES)}")
        out.add(DAY_NAMES.index(day.lower()))
    return frozenset(out)


def _dates(value: Any, where: str) -> frozenset[dt.date]:
    if not isinstance(value, list):
        raise ConfigError(f"{where} must be a list of dates such as [\"2025-01-09\"], was {value!r}")
    out = set()
    for item in value:
        if isinstance(item, dt.date) and not isinstance(item, dt.datetime):
            out.add(item)  # a TOML date literal
            continue
        try:
            out.add(dt.date.fromisoformat(item))
        except (TypeError, ValueError):
            raise ConfigError(f"{where}: {item!r} is not a date as \"YYYY-MM-DD\"") from None
    return frozenset(out)


_CLASS_KEYS = ("timezone", "days", "open", "close", "holidays", "early_close", "closed")
_CLASS_NAME = re.compile(r"[a-z][a-z0-9_]{0,31}")


def parse_classes(data: Any) -> dict[str, SessionClass]:
    """The session classes of a ``[market_hours]`` table: the built-in ones, each changed by a
    ``[market_hours.<name>]`` table of the same name, and new ones (which must give ``timezone``, ``days``,
    ``open`` and ``close``).

    :raises ConfigError: naming the key and what is wrong.
    """
    if not isinstance(data, Mapping):
        raise ConfigError(f"[market_hours] must be a table, was {type(data).__name__}")
    classes = dict(BUILTIN_CLASSES)
    for name, table in data.items():
        where = f"market_hours.{name}"
        if not isinstance(name, str) or not _CLASS_NAME.fullmatch(name):
            raise ConfigError(f"[{where}]: a class name is 1 to 32 lowercase letters, digits or '_', starting with a letter")
        if not isinstance(table, Mapping):
            raise ConfigError(f"[{where}] must be a table, was {type(table).__name__}")
        unknown = sorted(set(table) - set(_CLASS_KEYS))
        if unknown:
            raise ConfigError(f"[{where}]: unknown key(s): {', '.join(unknown)}; allowed: {', '.join(_CLASS_KEYS)}")
        base = classes.get(name)
        if base is None:
            missing = [k for k in ("timezone", "days", "open", "close") if k not in table]
            if missing:
                raise ConfigError(f"[{where}] is a new class ({', '.join(BUILTIN_CLASSES)} are built in) and needs "
                                  f"{', '.join(missing)}")  # fmt: skip
        fields: dict[str, Any] = {} if base is None else attrs.asdict(base, recurse=False)
        fields.pop("zone", None)
        fields["name"] = name
        if "timezone" in table:
            if not isinstance(table["timezone"], str):
                raise ConfigError(f"{where}.timezone must be a string such as 'America/New_York', was {table['timezone']!r}")
            try:
                _zone(table["timezone"])
            except ConfigError as exc:
                raise ConfigError(f"{where}.timezone: {exc}") from None
            fields["timezone"] = table["timezone"]
        if "days" in table:
            fields["days"] = _days(table["days"], f"{where}.days")
        for key in ("open", "close"):
            if key in table:
                fields[key] = _time(table[key], f"{where}.{key}")
        if "early_close" in table:
            fields["early_close"] = _time(table["early_close"], f"{where}.early_close")
        if "holidays" in table:
            if table["holidays"] not in HOLIDAY_CALENDARS:
                raise ConfigError(f"{where}.holidays must be one of {', '.join(HOLIDAY_CALENDARS)}, was {table['holidays']!r}")
            fields["holidays"] = table["holidays"]
        if "closed" in table:
            fields["closed"] = _dates(table["closed"], f"{where}.closed")
        classes[name] = SessionClass(**fields)
    return classes


def parse_patterns(data: Any, where: str) -> tuple[tuple[str, str], ...]:
    """A broker's ``market_hours`` table: symbol glob patterns (``fnmatch``, case-sensitive) to class names, tried in
    order. Class names are checked against the classes by :class:`SessionMap`."""
    if not isinstance(data, Mapping):
        raise ConfigError(f"{where} must be a table of symbol pattern = class name, was {data!r}")
    out = []
    for glob, name in data.items():
        if not isinstance(name, str):
            raise ConfigError(f"{where}.{glob!r} must name a session class, was {name!r}")
        out.append((glob, name))
    return tuple(out)


class SessionMap:
    """Which session class each symbol of one broker instance is in: the first matching pattern, else
    :func:`default_class`. Remembers each symbol's class (the symbols it sees are the instance's subscriptions)."""

    def __init__(
        self, patterns: Iterable[tuple[str, str]] = (), classes: Mapping[str, SessionClass] | None = None,
        where: str = "market_hours",
    ) -> None:
        self.classes = dict(BUILTIN_CLASSES if classes is None else classes)
        self.patterns = tuple(patterns)
        for glob, name in self.patterns:
            if name not in self.classes:
                raise ConfigError(f"{where}.{glob!r}: no session class {name!r}; known: {', '.join(sorted(self.classes))}")
        self._of: dict[str, SessionClass] = {}

    def class_of(self, symbol: str) -> SessionClass:
        """The session class of ``symbol``."""
        found = self._of.get(symbol)
        if found is None:
            name = next((n for glob, n in self.patterns if fnmatch.fnmatchcase(symbol, glob)), None)
            found = self.classes[name or default_class(symbol)]
            self._of[symbol] = found
        return found

    def forget(self, keep: set[str]) -> None:
        """Drop remembered symbols not in ``keep`` (unsubscribed ones)."""
        for symbol in [s for s in self._of if s not in keep]:
            del self._of[symbol]
