"""In-process event bus behind ``GET /events``: state changes and progress, fanned out to subscribers."""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import AsyncIterator
from typing import Any

__all__ = ["EventBus"]


class EventBus:
    """Publish dict events to every subscriber without ever blocking the publisher.

    A slow subscriber loses its oldest events (it gets a ``dropped`` count) instead of growing memory without
    bound or slowing the downloads down.
    """

    def __init__(self, queue_size: int = 1000, history: int = 100) -> None:
        self._subscribers: set[_Subscriber] = set()
        self._queue_size = queue_size
        self.recent: deque[dict[str, Any]] = deque(maxlen=history)  # last events, e.g. for "last errors"

    def publish(self, kind: str, **data: Any) -> dict[str, Any]:
        event = {"event": kind, "time": round(time.time(), 3), **data}
        if kind != "progress":
            self.recent.append(event)
        for subscriber in list(self._subscribers):
            subscriber.put(event)
        return event

    async def subscribe(self) -> AsyncIterator[dict[str, Any]]:
        """Yield events as they come until the consumer stops iterating or :meth:`close` is called."""
        subscriber = _Subscriber(self._queue_size)
        self._subscribers.add(subscriber)
        try:
            while True:
                event = await subscriber.get()
                if event is None:
                    return
                yield event
        finally:
            self._subscribers.discard(subscriber)

    def close(self) -> None:
        """End every subscription (daemon shutdown)."""
        for subscriber in list(self._subscribers):
            subscriber.close()


class _Subscriber:
    def __init__(self, size: int) -> None:
        self.events: deque[dict[str, Any] | None] = deque()
        self.size = size
        self.dropped = 0
        self.ready = asyncio.Event()

    def put(self, event: dict[str, Any]) -> None:
        if len(self.events) >= self.size:
            self.events.popleft()
            self.dropped += 1
        self.events.append(event)
        self.ready.set()

    def close(self) -> None:
        self.events.append(None)
        self.ready.set()

    async def get(self) -> dict[str, Any] | None:
        while not self.events:
            self.ready.clear()
            await self.ready.wait()
        event = self.events.popleft()
        if event is not None and self.dropped:
            event = {**event, "dropped": self.dropped}
            self.dropped = 0
        return event
