"""schedule.py as tables: which window is in force (over midnight, across the week), when the schedule next
switches, and how long a manual `wangpctl limit` holds (until the next window edge after it was set; forever
without a schedule).

All times are in one fixed week: Monday 2026-12-07 .. Sunday 2026-12-13, UTC unless a case says otherwise.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from conftest import write_config
from wangpd.config import ScheduleWindow, load_config
from wangpd.schedule import EffectiveLimit, effective_limit, next_edge

UTC = dt.UTC
DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
ALL = (0, 1, 2, 3, 4, 5, 6)
WEEKDAYS = (0, 1, 2, 3, 4)
MB = 1000**2


def at(day: str, hhmm: str, week: int = 0, tz: dt.tzinfo | None = UTC) -> dt.datetime:
    """``at("fri", "22:00")``: that minute in the reference week (``week=1``: the week after); "HH:MM:SS" too."""
    parts = [int(p) for p in hhmm.split(":")]
    hour, minute, second = (*parts, 0)[:3]
    date = dt.date(2026, 12, 7) + dt.timedelta(days=DAYS.index(day) + 7 * week)
    return dt.datetime(date.year, date.month, date.day, hour, minute, second, tzinfo=tz)


def window(days: tuple[int, ...], start: str, end: str, limit: int) -> ScheduleWindow:
    def minutes(text: str) -> int:
        hour, minute = text.split(":")
        return int(hour) * 60 + int(minute)

    return ScheduleWindow(days=days, start_minute=minutes(start), end_minute=minutes(end), limit=limit)


WORKDAY = window(WEEKDAYS, "08:00", "19:00", 10 * MB)  # mon-fri 08:00-19:00
FRIDAY_NIGHT = window((4,), "22:00", "06:00", 1 * MB)  # over midnight: Fri 22:00 .. Sat 06:00
SUNDAY_NIGHT = window((6,), "23:00", "02:00", 2 * MB)  # over midnight and over the end of the week
EVENING = window((0,), "20:00", "24:00", 3 * MB)  # "to: 24:00", the config's default end
WEEKEND = window((5, 6), "00:00", "24:00", 4 * MB)  # whole days
ALWAYS = window(ALL, "00:00", "24:00", 5 * MB)  # never switches
EMPTY = window(ALL, "06:00", "06:00", 6 * MB)  # from == to: never in force
MONDAY_HOUR = window((0,), "09:00", "10:00", 7 * MB)
NEXT_HOUR = window((0,), "10:00", "11:00", 8 * MB)  # starts where MONDAY_HOUR ends

DEFAULT = 50 * MB


# ---- which window is in force (no manual limit) ------------------------------------------------------------------

ACTIVE_CASES = [
    # (id, windows, now, expected source, expected rate, expected window index)
    ("before a window", (WORKDAY,), at("mon", "07:59"), "config", DEFAULT, None),
    ("window start is inclusive", (WORKDAY,), at("mon", "08:00"), "schedule", 10 * MB, 0),
    ("last minute of a window", (WORKDAY,), at("mon", "18:59:59"), "schedule", 10 * MB, 0),
    ("window end is exclusive", (WORKDAY,), at("mon", "19:00"), "config", DEFAULT, None),
    ("a weekday window on saturday", (WORKDAY,), at("sat", "12:00"), "config", DEFAULT, None),
    ("over midnight: the evening part", (WORKDAY, FRIDAY_NIGHT), at("fri", "22:00"), "schedule", 1 * MB, 1),
    ("over midnight: after midnight", (WORKDAY, FRIDAY_NIGHT), at("sat", "00:00"), "schedule", 1 * MB, 1),
    ("over midnight: last minute", (WORKDAY, FRIDAY_NIGHT), at("sat", "05:59"), "schedule", 1 * MB, 1),
    ("over midnight: end is exclusive", (WORKDAY, FRIDAY_NIGHT), at("sat", "06:00"), "config", DEFAULT, None),
    # The window belongs to the day it starts on: Friday's early morning is Thursday night, not in `days`.
    ("over midnight: the start day's morning", (FRIDAY_NIGHT,), at("fri", "03:00"), "config", DEFAULT, None),
    ("over midnight: the day before", (FRIDAY_NIGHT,), at("thu", "23:00"), "config", DEFAULT, None),
    ("over the end of the week: sunday part", (SUNDAY_NIGHT,), at("sun", "23:30"), "schedule", 2 * MB, 0),
    ("over the end of the week: monday part", (SUNDAY_NIGHT,), at("mon", "01:59"), "schedule", 2 * MB, 0),
    ("over the end of the week: ended", (SUNDAY_NIGHT,), at("mon", "02:00"), "config", DEFAULT, None),
    ("to 24:00: last minute of the day", (EVENING,), at("mon", "23:59:59"), "schedule", 3 * MB, 0),
    ("to 24:00: not the next day", (EVENING,), at("tue", "00:00"), "config", DEFAULT, None),
    ("whole days: saturday start", (WEEKEND,), at("sat", "00:00"), "schedule", 4 * MB, 0),
    ("whole days: sunday end", (WEEKEND,), at("sun", "23:59"), "schedule", 4 * MB, 0),
    ("whole days: monday", (WEEKEND,), at("mon", "00:00"), "config", DEFAULT, None),
    ("from == to is never in force", (EMPTY,), at("wed", "06:00"), "config", DEFAULT, None),
    ("overlapping windows: the first wins", (ALWAYS, MONDAY_HOUR), at("mon", "09:30"), "schedule", 5 * MB, 0),
    ("overlapping windows: order matters", (MONDAY_HOUR, ALWAYS), at("mon", "09:30"), "schedule", 7 * MB, 0),
    ("overlapping windows: the later one fills in", (MONDAY_HOUR, ALWAYS), at("mon", "10:00"), "schedule", 5 * MB, 1),
    ("a window may say unlimited", (window(ALL, "01:00", "05:00", 0),), at("tue", "02:00"), "schedule", 0, 0),
    ("no schedule", (), at("tue", "02:00"), "config", DEFAULT, None),
    ("naive local time works the same", (WORKDAY,), at("tue", "08:00", tz=None), "schedule", 10 * MB, 0),
]


@pytest.mark.parametrize(
    ("windows", "now", "source", "rate", "index"),
    [case[1:] for case in ACTIVE_CASES],
    ids=[case[0] for case in ACTIVE_CASES],
)
def test_effective_limit_without_manual(
    windows: tuple[ScheduleWindow, ...], now: dt.datetime, source: str, rate: int, index: int | None
) -> None:
    result = effective_limit(DEFAULT, windows, now)
    assert (result.source, result.rate, result.window) == (source, rate, index)
    assert result.next_edge == next_edge(windows, now)


# ---- when the schedule next switches -----------------------------------------------------------------------------

EDGE_CASES = [
    # (id, windows, now, expected next edge)
    ("no schedule", (), at("mon", "12:00"), None),
    ("to the next start", (WORKDAY,), at("mon", "07:30"), at("mon", "08:00")),
    ("seconds are dropped", (WORKDAY,), at("mon", "07:59:59"), at("mon", "08:00")),
    ("at the start: the end is next", (WORKDAY,), at("mon", "08:00"), at("mon", "19:00")),
    ("inside: the end", (WORKDAY,), at("wed", "12:34:56"), at("wed", "19:00")),
    ("after the end: tomorrow's start", (WORKDAY,), at("mon", "19:00"), at("tue", "08:00")),
    ("friday evening: over the weekend", (WORKDAY,), at("fri", "19:00"), at("mon", "08:00", week=1)),
    ("to an over-midnight start", (WORKDAY, FRIDAY_NIGHT), at("fri", "19:00"), at("fri", "22:00")),
    ("over-midnight: its end the next day", (WORKDAY, FRIDAY_NIGHT), at("fri", "22:00"), at("sat", "06:00")),
    ("over-midnight end, then next week", (WORKDAY, FRIDAY_NIGHT), at("sat", "06:00"), at("mon", "08:00", week=1)),
    ("over the end of the week", (SUNDAY_NIGHT,), at("sun", "23:00"), at("mon", "02:00", week=1)),
    ("to 24:00: ends at midnight", (EVENING,), at("mon", "21:00"), at("tue", "00:00")),
    ("whole days: end of sunday", (WEEKEND,), at("sat", "10:00"), at("mon", "00:00", week=1)),
    ("one hour a week: almost a week ahead", (MONDAY_HOUR,), at("mon", "10:00"), at("mon", "09:00", week=1)),
    ("one hour a week: one minute past its start", (MONDAY_HOUR,), at("mon", "09:01"), at("mon", "10:00")),
    ("back-to-back windows: each edge counts", (MONDAY_HOUR, NEXT_HOUR), at("mon", "09:00"), at("mon", "10:00")),
    ("overlap: the first window hides the second", (ALWAYS, MONDAY_HOUR), at("mon", "08:00"), None),
    ("overlap: the second shows through", (MONDAY_HOUR, ALWAYS), at("mon", "08:00"), at("mon", "09:00")),
    ("a window that never switches", (ALWAYS,), at("thu", "12:00"), None),
    ("from == to never switches", (EMPTY,), at("thu", "12:00"), None),
    ("naive in, naive out", (WORKDAY,), at("mon", "07:00", tz=None), at("mon", "08:00", tz=None)),
]


@pytest.mark.parametrize(
    ("windows", "now", "expected"), [case[1:] for case in EDGE_CASES], ids=[case[0] for case in EDGE_CASES]
)
def test_next_edge(windows: tuple[ScheduleWindow, ...], now: dt.datetime, expected: dt.datetime | None) -> None:
    assert next_edge(windows, now) == expected


def test_next_edge_keeps_the_time_zone() -> None:
    plus_two = dt.timezone(dt.timedelta(hours=2))
    edge = next_edge((WORKDAY,), at("mon", "07:00", tz=plus_two))
    assert edge == at("mon", "08:00", tz=plus_two)
    assert edge is not None and edge.utcoffset() == dt.timedelta(hours=2)


# ---- a manual limit holds until the next window edge after it was set --------------------------------------------

MANUAL_RATE = 20 * MB

MANUAL_CASES = [
    # (id, windows, set at, now, expected source, expected rate, expected window)
    ("set outside, before the window starts", (WORKDAY,), at("mon", "07:00"), at("mon", "07:59:59"), "manual",
     MANUAL_RATE, None),
    ("set outside, dropped at the start edge", (WORKDAY,), at("mon", "07:00"), at("mon", "08:00"), "schedule",
     10 * MB, 0),
    ("set inside, held to the end of the window", (WORKDAY,), at("mon", "09:00"), at("mon", "18:59"), "manual",
     MANUAL_RATE, 0),
    ("set inside, dropped at the end edge", (WORKDAY,), at("mon", "09:00"), at("mon", "19:00"), "config",
     DEFAULT, None),
    ("set inside, long gone the next day", (WORKDAY,), at("mon", "09:00"), at("tue", "09:00"), "schedule",
     10 * MB, 0),
    ("set at an edge minute: held to the next one", (WORKDAY,), at("mon", "08:00"), at("mon", "12:00"), "manual",
     MANUAL_RATE, 0),
    ("set just before an edge: gone at it", (WORKDAY,), at("mon", "07:59:59"), at("mon", "08:00"), "schedule",
     10 * MB, 0),
    ("set friday evening: held over the weekend", (WORKDAY,), at("fri", "20:00"), at("sun", "23:59"), "manual",
     MANUAL_RATE, None),
    ("set friday evening: gone monday morning", (WORKDAY,), at("fri", "20:00"), at("mon", "08:00", week=1),
     "schedule", 10 * MB, 0),
    ("over midnight: held through the night", (FRIDAY_NIGHT,), at("fri", "23:00"), at("sat", "05:59"), "manual",
     MANUAL_RATE, 0),
    ("over midnight: gone at its end", (FRIDAY_NIGHT,), at("fri", "23:00"), at("sat", "06:00"), "config",
     DEFAULT, None),
    ("no schedule: held forever", (), at("mon", "09:00"), at("mon", "09:00", week=52), "manual", MANUAL_RATE, None),
    ("a schedule that never switches: held forever", (ALWAYS,), at("mon", "09:00"), at("mon", "09:00", week=5),
     "manual", MANUAL_RATE, 0),
    ("set in the future (clock stepped back)", (WORKDAY,), at("mon", "10:00"), at("mon", "09:00"), "manual",
     MANUAL_RATE, 0),
    ("naive local times", (WORKDAY,), at("mon", "07:00", tz=None), at("mon", "07:30", tz=None), "manual",
     MANUAL_RATE, None),
    ("naive local times: dropped at the edge", (WORKDAY,), at("mon", "07:00", tz=None), at("mon", "08:00", tz=None),
     "schedule", 10 * MB, 0),
]  # fmt: skip


@pytest.mark.parametrize(
    ("windows", "set_at", "now", "source", "rate", "index"),
    [case[1:] for case in MANUAL_CASES],
    ids=[case[0] for case in MANUAL_CASES],
)
def test_effective_limit_with_manual(
    windows: tuple[ScheduleWindow, ...],
    set_at: dt.datetime,
    now: dt.datetime,
    source: str,
    rate: int,
    index: int | None,
) -> None:
    result = effective_limit(DEFAULT, windows, now, (MANUAL_RATE, set_at.timestamp()))
    assert (result.source, result.rate, result.window) == (source, rate, index)
    # The edge reported is the schedule's next edge from now, whoever is in force.
    assert result.next_edge == next_edge(windows, now)


def test_manual_zero_means_unlimited_and_still_wins() -> None:
    result = effective_limit(DEFAULT, (WORKDAY,), at("mon", "09:00"), (0, at("mon", "08:30").timestamp()))
    assert result == EffectiveLimit(rate=0, source="manual", window=0, next_edge=at("mon", "19:00"))


def test_manual_compares_instants_across_time_zones() -> None:
    # Set at 07:30 UTC = 09:30 at +02:00: in the +02:00 schedule that is inside the window, held until 19:00 +02:00.
    plus_two = dt.timezone(dt.timedelta(hours=2))
    manual = (MANUAL_RATE, at("mon", "07:30").timestamp())
    assert effective_limit(DEFAULT, (WORKDAY,), at("mon", "18:59", tz=plus_two), manual).source == "manual"
    assert effective_limit(DEFAULT, (WORKDAY,), at("mon", "19:00", tz=plus_two), manual).source == "config"


# ---- the same rules through the config file ----------------------------------------------------------------------


def test_schedule_from_config_yaml(tmp_path: Path) -> None:
    (tmp_path / "wan2gp").mkdir()
    path = write_config(
        tmp_path,
        tmp_path / "wan2gp",
        tmp_path,
        download={
            "bandwidth": "5MB/s",
            "schedule": [
                {"days": "fri-mon", "from": "22:00", "to": "06:00", "limit": "1MB/s"},  # a day range over the week end
                {"days": "weekdays", "from": "08:00", "limit": "10MB/s"},  # `to` defaults to 24:00
            ],
        },
    )
    download = load_config(path, environ={"HOME": str(tmp_path)}).download
    assert download.schedule == (
        ScheduleWindow(days=(0, 4, 5, 6), start_minute=22 * 60, end_minute=6 * 60, limit=1 * MB),
        ScheduleWindow(days=WEEKDAYS, start_minute=8 * 60, end_minute=24 * 60, limit=10 * MB),
    )
    table = [
        (at("mon", "23:00"), "schedule", 1 * MB, 0),  # both match: the first wins
        (at("tue", "05:59"), "schedule", 1 * MB, 0),  # Monday night runs into Tuesday
        (at("tue", "06:00"), "config", 5 * MB, None),
        (at("tue", "08:00"), "schedule", 10 * MB, 1),
        (at("tue", "23:59"), "schedule", 10 * MB, 1),  # Tuesday is not in fri-mon
        (at("wed", "03:00"), "config", 5 * MB, None),  # 24:00 ends at midnight
        (at("sat", "12:00"), "config", 5 * MB, None),
        (at("sun", "22:30"), "schedule", 1 * MB, 0),
    ]
    for now, source, rate, index in table:
        result = effective_limit(download.bandwidth, download.schedule, now)
        assert (result.source, result.rate, result.window) == (source, rate, index), now
    assert next_edge(download.schedule, at("tue", "06:00")) == at("tue", "08:00")
    assert next_edge(download.schedule, at("fri", "12:00")) == at("fri", "22:00")  # 10 MB/s -> 1 MB/s directly
