"""Requests being computed, so that a stop can wait for them and, after its grace period, answer the rest.

A TensorFlow computation cannot be interrupted from Python. Each request therefore runs in its own
daemon thread while the thread that answers the client waits for it; `cancel` makes every waiting
request fail with a status (UNAVAILABLE when the server stops), and the computations still running
are left to finish or to end with the process.
"""

import threading
import time

from serving.errors import ServingError


class InFlight:
    """`run(fn)` calls `fn()` and returns or raises what it does, unless `cancel(error)` comes first."""

    def __init__(self):
        self._cond = threading.Condition()
        self._running = 0
        self._cancelled = None  # the ServingError every request still waiting (or arriving) raises

    def run(self, fn):
        outcome = {}

        def work():
            try:
                outcome["value"] = fn()
            except BaseException as e:  # noqa: BLE001 - re-raised in the waiting thread
                outcome["error"] = e
            with self._cond:
                outcome["done"] = True
                self._cond.notify_all()

        with self._cond:
            if self._cancelled is not None:
                raise self._cancelled
            self._running += 1
        try:
            threading.Thread(target=work, name="request", daemon=True).start()
            with self._cond:
                self._cond.wait_for(lambda: "done" in outcome or self._cancelled is not None)
                if "done" not in outcome:
                    raise self._cancelled
        finally:
            with self._cond:
                self._running -= 1
                self._cond.notify_all()
        if "error" in outcome:
            raise outcome["error"]
        return outcome["value"]

    def wait(self, timeout):
        """True once no request is waiting for its computation; False after `timeout` seconds."""
        with self._cond:
            return self._cond.wait_for(lambda: self._running == 0, max(0.0, timeout))

    def cancel(self, error: ServingError, timeout=1.0):
        """Every request waiting now or arriving later raises `error`; returns how many were waiting, once
        they have been answered (or after `timeout` seconds)."""
        with self._cond:
            self._cancelled = error
            waiting = self._running
            self._cond.notify_all()
        self.wait(timeout)
        return waiting


def deadline_left(deadline):
    """Seconds from now until `deadline` (a time.monotonic() value), at least 0."""
    return max(0.0, deadline - time.monotonic())
