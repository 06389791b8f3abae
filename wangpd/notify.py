"""systemd notifications (sd_notify) over ``$NOTIFY_SOCKET``.

sdnotify encodes with latin-1 and silently drops a message it cannot encode, so every message is made ASCII here
first: a status line with a model name in another script must still reach systemd.
"""

from __future__ import annotations

import logging
import time
import unicodedata

import sdnotify

__all__ = ["Notifier"]

log = logging.getLogger(__name__)


def _ascii(text: str) -> str:
    folded = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode("ascii")
    # One message may hold several KEY=VALUE lines; a newline inside STATUS would start a bogus key.
    return folded.replace("\r", " ")


class Notifier:
    """Sends READY/STATUS/WATCHDOG/RELOADING/STOPPING when run under systemd; does nothing otherwise."""

    def __init__(self, environ: dict[str, str] | None = None) -> None:
        import os

        env = os.environ if environ is None else environ
        self.enabled = bool(env.get("NOTIFY_SOCKET"))
        self._notifier: sdnotify.SystemdNotifier | None = None
        if self.enabled:
            try:
                # debug=True: raise instead of swallowing, so a wrong NOTIFY_SOCKET is logged, not silently ignored.
                self._notifier = sdnotify.SystemdNotifier(debug=True)
                # Never block the event loop on systemd: with a full receive queue a blocking send would hang the
                # daemon (seen in tests); a dropped STATUS is harmless, the next one follows.
                self._notifier.socket.setblocking(False)
            except OSError as exc:
                log.warning(
                    "NOTIFY_SOCKET=%s cannot be reached (%s); systemd will not hear from wangpd",
                    env.get("NOTIFY_SOCKET"),
                    exc,
                )
        usec = env.get("WATCHDOG_USEC")
        pid = env.get("WATCHDOG_PID")
        self.watchdog_interval: float | None = None
        if usec and usec.isdigit() and int(usec) > 0 and (not pid or pid == str(os.getpid())):
            # Ping at half the timeout, as sd_watchdog_enabled(3) recommends.
            self.watchdog_interval = int(usec) / 1_000_000 / 2

    def send(self, *lines: str) -> None:
        if self._notifier is None:
            return
        message = "\n".join(_ascii(line.replace("\n", " ")) for line in lines)
        # READY/STOPPING/RELOADING matter (systemd waits for them): retry a full queue for up to ~0.2 s.
        # STATUS and WATCHDOG come again soon: drop them rather than wait.
        tries = 1 if all(line.startswith(("STATUS=", "WATCHDOG=")) for line in lines) else 40
        for attempt in range(tries):
            try:
                self._notifier.notify(message)
                return
            except BlockingIOError:
                if attempt + 1 < tries:
                    time.sleep(0.005)
            except OSError as exc:
                log.debug("sd_notify %r failed: %s", message, exc)
                return
        log.debug("sd_notify queue full, dropped %r", message)

    def ready(self, status: str | None = None) -> None:
        self.send("READY=1", *([f"STATUS={status}"] if status else []))

    def status(self, text: str) -> None:
        self.send(f"STATUS={text}")

    def watchdog(self) -> None:
        self.send("WATCHDOG=1")

    def reloading(self) -> None:
        # systemd >= 253 wants MONOTONIC_USEC with RELOADING=1 to tell this reload from an earlier one.
        usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        self.send("RELOADING=1", f"MONOTONIC_USEC={usec}")

    def stopping(self) -> None:
        self.send("STOPPING=1", "STATUS=stopping")
