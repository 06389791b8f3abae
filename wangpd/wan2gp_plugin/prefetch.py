"""Prefetch on model choice: the model picked in Wan2GP's UI goes to the top of wangpd's queue.

Wan2GP calls ``on_model_change`` inside its model switch, on the UI's thread: :meth:`Prefetcher.request` only
records the choice and wakes one daemon thread, which sends it after ``delay`` seconds without another choice
(browsing a family switches through its models; only where the user stops counts).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from .client import Client
from .fetch import queue_top

__all__ = ["Prefetcher"]


class Prefetcher:
    def __init__(self, client: Client, delay: float, log: Callable[[str], None]) -> None:
        self.client = client
        self.delay = delay
        self.log = log
        self._wanted: str | None = None
        self._due = 0.0
        self._wake = threading.Condition()
        self._thread: threading.Thread | None = None
        self.sent: list[str] = []  # model types sent, in order (for the tab and the tests)
        self._failed_before = False

    def request(self, model_type: str) -> None:
        """Fetch ``model_type`` soon; never blocks beyond taking a lock."""
        with self._wake:
            self._wanted = model_type
            self._due = time.monotonic() + self.delay
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="wangpd-prefetch", daemon=True)
                self._thread.start()
            self._wake.notify()

    def _run(self) -> None:
        while True:
            with self._wake:
                while self._wanted is None or time.monotonic() < self._due:
                    if self._wanted is None:
                        # Nothing asked for a minute: let the thread end (a new request starts another).
                        if not self._wake.wait(timeout=60):
                            self._thread = None
                            return
                    else:
                        self._wake.wait(timeout=max(0.0, self._due - time.monotonic()))
                model_type, self._wanted = self._wanted, None
            self._send(model_type)

    def _send(self, model_type: str) -> None:
        try:
            error = queue_top(self.client, model_type)
        except Exception as exc:  # never into Wan2GP, never killing the thread
            error = repr(exc)
        if error is None:
            self.sent.append(model_type)
            self._failed_before = False
        elif not self._failed_before:
            # One line, not one per model switch while the daemon is down.
            self.log(f"could not queue {model_type} in wangpd: {error}")
            self._failed_before = True
