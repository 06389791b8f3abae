"""Rates: one bandwidth limiter shared by every transfer (a token bucket in GCRA form) and the speed meter.

The whole bucket is one float, the *theoretical arrival time* (TAT): the moment at which every byte granted so
far would have been delivered at exactly the configured rate. A caller that reads ``n`` bytes moves the TAT
forward by ``n / rate`` and sleeps until the TAT is no more than the burst tolerance (100 ms) ahead of now.
Reading and moving the TAT happen without an ``await`` in between, so on one event loop no lock is needed and
callers are served in the order they arrived.

A rate change rescales what every caller still owes beyond the burst (bytes owed stay bytes owed, paid at the new
rate) and re-arms every sleeper's timer: a transfer sleeping under an old, slow rate wakes as soon as a faster rate
allows, and a slower rate holds at once without a catch-up stall.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable

__all__ = ["BURST_SECONDS", "RateLimiter", "SpeedMeter"]

# Burst tolerance as time: with a rate-proportional burst, "100 ms of the rate" is the same 0.1 s at any rate.
BURST_SECONDS = 0.1


class _Sleeper:
    """A caller waiting for its reservation; ``end`` is its TAT on the limiter's clock."""

    __slots__ = ("end", "future", "handle")

    def __init__(self, end: float, future: asyncio.Future[None]) -> None:
        self.end = end
        self.future = future
        self.handle: asyncio.TimerHandle | None = None


class RateLimiter:
    """Shared byte-rate limiter. ``rate`` is bytes per second; 0 means unlimited.

    ``clock`` defaults to :func:`time.monotonic`; tests may pass their own clock and drive :meth:`reserve`
    directly. The limiter knows nothing about pausing: a paused transfer simply stops calling :meth:`acquire`.
    """

    def __init__(self, rate: int = 0, *, clock: Callable[[], float] = time.monotonic) -> None:
        if rate < 0:
            raise ValueError(f"rate must not be negative, got {rate}")
        self._rate = float(rate)
        self._clock = clock
        self._tat = clock()
        self._sleepers: set[_Sleeper] = set()

    @property
    def rate(self) -> int:
        """Current limit in bytes per second (0 = unlimited)."""
        return int(self._rate)

    def reserve(self, nbytes: int) -> float:
        """Claim ``nbytes`` now; return how long the caller must wait (seconds, >= 0) before going on."""
        if self._rate <= 0 or nbytes <= 0:
            return 0.0
        now = self._clock()
        self._tat = max(self._tat, now) + nbytes / self._rate
        return max(0.0, self._tat - BURST_SECONDS - now)

    async def acquire(self, nbytes: int) -> None:
        """Account for ``nbytes`` just read and sleep as long as the rate requires."""
        delay = self.reserve(nbytes)
        if delay <= 0:
            return
        loop = asyncio.get_running_loop()
        sleeper = _Sleeper(self._tat, loop.create_future())
        self._sleepers.add(sleeper)
        try:
            self._arm(sleeper, delay)
            await sleeper.future
        finally:
            self._sleepers.discard(sleeper)
            if sleeper.handle is not None:
                sleeper.handle.cancel()

    def set_rate(self, bytes_per_s: int) -> None:
        """Change the limit at once. Sleepers are rescheduled under the new rate (0 wakes everyone)."""
        if bytes_per_s < 0:
            raise ValueError(f"rate must not be negative, got {bytes_per_s}")
        new_rate = float(bytes_per_s)
        old_rate = self._rate
        if new_rate == old_rate:
            return
        now = self._clock()
        self._rate = new_rate
        if new_rate <= 0:
            self._tat = now
            for sleeper in list(self._sleepers):
                self._wake(sleeper)
            return
        if old_rate <= 0:
            # Coming from unlimited: nothing is owed, start with a full burst.
            self._tat = now
            return
        # Only the debt beyond the burst tolerance is rescaled: bytes that were let through as burst are not
        # charged again at a slower rate (that would stall every transfer right after a decrease). Waiters keep
        # their place in line and pay what they still owe at the new rate.
        scale = old_rate / new_rate
        self._tat = self._rescaled(self._tat, now, scale)
        for sleeper in list(self._sleepers):
            sleeper.end = self._rescaled(sleeper.end, now, scale)
            if sleeper.handle is not None:
                sleeper.handle.cancel()
            self._arm(sleeper, sleeper.end - BURST_SECONDS - now)

    @staticmethod
    def _rescaled(tat: float, now: float, scale: float) -> float:
        debt = tat - BURST_SECONDS - now
        return tat if debt <= 0 else now + BURST_SECONDS + debt * scale

    def _arm(self, sleeper: _Sleeper, delay: float) -> None:
        if delay <= 0:
            self._wake(sleeper)
            return
        sleeper.handle = asyncio.get_running_loop().call_later(delay, self._wake, sleeper)

    @staticmethod
    def _wake(sleeper: _Sleeper) -> None:
        if not sleeper.future.done():
            sleeper.future.set_result(None)


class SpeedMeter:
    """Moving-average speed over the last ``window`` seconds, fed with cumulative bytes done."""

    def __init__(self, window: float = 3.0, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.window = window
        self._clock = clock
        self._samples: deque[tuple[float, int]] = deque()

    def update(self, bytes_done: int) -> float:
        """Record the cumulative count now; return the current speed in bytes/s."""
        now = self._clock()
        if self._samples and bytes_done < self._samples[-1][1]:
            self._samples.clear()  # the transfer restarted from an earlier offset
        self._samples.append((now, bytes_done))
        while len(self._samples) > 2 and now - self._samples[1][0] >= self.window:
            self._samples.popleft()
        return self.rate

    @property
    def rate(self) -> float:
        """Bytes per second over the window (0.0 until two samples exist)."""
        if len(self._samples) < 2:
            return 0.0
        (t0, b0), (t1, b1) = self._samples[0], self._samples[-1]
        return (b1 - b0) / (t1 - t0) if t1 > t0 else 0.0
