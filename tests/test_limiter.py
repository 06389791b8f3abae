"""The shared GCRA limiter: exact arithmetic on an injected clock, then short real runs on the event loop."""

from __future__ import annotations

import asyncio
import time

import pytest

from wangpd.limiter import RateLimiter


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_reserve_arithmetic_on_an_injected_clock() -> None:
    clock = Clock()
    limiter = RateLimiter(1000, clock=clock)
    # The burst (100 ms of the rate = 100 bytes) passes without waiting...
    assert limiter.reserve(100) == 0.0
    # ...then every byte costs 1 ms.
    assert limiter.reserve(100) == pytest.approx(0.1)
    assert limiter.reserve(50) == pytest.approx(0.15)
    clock.now += 10  # idle: credit never exceeds the burst
    assert limiter.reserve(100) == 0.0
    assert limiter.reserve(1) == pytest.approx(0.001)


def test_rate_change_rescales_what_is_owed() -> None:
    clock = Clock()
    limiter = RateLimiter(1000, clock=clock)
    limiter.reserve(100)
    assert limiter.reserve(1000) == pytest.approx(1.0)  # owes 1.0 s at 1000 B/s beyond the burst
    limiter.set_rate(4000)  # the same bytes now take 0.25 s; the burst already used is not charged again
    assert limiter.reserve(0) == 0.0
    assert limiter.reserve(4) == pytest.approx(0.25 + 0.001)
    limiter.set_rate(1000)
    assert limiter.reserve(1) == pytest.approx(1.004 + 0.001)
    limiter.set_rate(0)
    assert limiter.rate == 0 and limiter.reserve(10**9) == 0.0
    limiter.set_rate(1000)  # from unlimited: nothing owed, a fresh burst
    assert limiter.reserve(100) == 0.0
    with pytest.raises(ValueError):
        limiter.set_rate(-1)


async def _pump(limiter: RateLimiter, chunk: int, stop_at: float, counter: list[int]) -> None:
    while time.monotonic() < stop_at:
        await limiter.acquire(chunk)
        counter[0] += chunk


@pytest.mark.parametrize("transfers", [1, 4])
def test_achieved_rate_matches_the_limit(transfers: int) -> None:
    rate = 4 * 1024 * 1024

    async def scenario() -> float:
        limiter = RateLimiter(rate)
        await limiter.acquire(rate // 10)  # spend the initial burst so the window measures the steady rate
        counter = [0]
        started = time.monotonic()
        stop_at = started + 1.5
        await asyncio.gather(*(_pump(limiter, 64 * 1024, stop_at, counter) for _ in range(transfers)))
        return counter[0] / (time.monotonic() - started)

    achieved = asyncio.run(scenario())
    assert achieved == pytest.approx(rate, rel=0.04)


def test_faster_rate_wakes_a_sleeper_at_once() -> None:
    async def scenario() -> float:
        limiter = RateLimiter(100_000)
        await limiter.acquire(10_000)  # burst spent
        sleeper = asyncio.create_task(limiter.acquire(200_000))  # would sleep ~2 s at the old rate
        await asyncio.sleep(0.05)
        assert not sleeper.done()
        changed = time.monotonic()
        limiter.set_rate(100_000_000)
        await asyncio.wait_for(sleeper, 1.0)
        return time.monotonic() - changed

    assert asyncio.run(scenario()) < 0.1


def test_unlimited_wakes_everyone() -> None:
    async def scenario() -> None:
        limiter = RateLimiter(10_000)
        await limiter.acquire(1_000)
        sleepers = [asyncio.create_task(limiter.acquire(50_000)) for _ in range(3)]
        await asyncio.sleep(0.02)
        limiter.set_rate(0)
        await asyncio.wait_for(asyncio.gather(*sleepers), 0.5)
        started = time.monotonic()
        for _ in range(1000):
            await limiter.acquire(10**9)
        assert time.monotonic() - started < 0.5

    asyncio.run(scenario())


def test_slower_rate_takes_hold_mid_transfer() -> None:
    fast, slow = 8 * 1024 * 1024, 1024 * 1024

    async def scenario() -> tuple[float, float]:
        limiter = RateLimiter(fast)
        counter = [0]
        started = time.monotonic()
        stop_at = started + 1.4
        pumps = asyncio.gather(*(_pump(limiter, 64 * 1024, stop_at, counter) for _ in range(2)))
        await asyncio.sleep(0.5)
        limiter.set_rate(slow)
        await asyncio.sleep(0.2)  # let reservations made at the old rate drain (at most the burst)
        mark_bytes, mark_time = counter[0], time.monotonic()
        await pumps
        after = (counter[0] - mark_bytes) / (time.monotonic() - mark_time)
        return mark_bytes / (mark_time - started), after

    _before, after = asyncio.run(scenario())
    assert after == pytest.approx(slow, rel=0.1)
