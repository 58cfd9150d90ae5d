"""Ctrl-C and SIGTERM during training: finish the step, save, stop (a second Ctrl-C stops at once)."""

from __future__ import annotations

import signal


class StopFlag:
    """Set by SIGINT / SIGTERM; the loop checks it after every step and then saves a checkpoint and returns.

    A second Ctrl-C raises KeyboardInterrupt at once (the entry point turns it into one line). Installed for
    the whole run, start-up included, so a signal there also ends the run cleanly.
    """

    def __init__(self):
        self.requested: str | None = None
        self._old = {}

    def install(self) -> StopFlag:
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                self._old[sig] = signal.signal(sig, self._handle)
            except ValueError:  # not the main thread (some launchers): signals stay as they are
                pass
        return self

    def _handle(self, signum, frame):
        if self.requested is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.requested = signal.Signals(signum).name

    def restore(self) -> None:
        for sig, old in self._old.items():
            signal.signal(sig, old)
        self._old = {}
