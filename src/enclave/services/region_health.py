"""Which regions can take new work now, for the live loop to tell the scheduler core.

Each region's back end says whether it can take work (``Executor.health``: Slurm's partition
is up, Ray's job API answers, a region worker is connected). Those calls do I/O and may be
slow (``sinfo`` has a 10 s timeout), so a watcher thread asks them every HEALTH_EVERY_S and
the live loop reads its last answer; the pure core gets the answer as data
(``ClusterState.set_unavailable``). A back end whose health check raises counts as down:
fail closed — work waits in the queue with a reason rather than being handed to a back end
that cannot be shown to run it.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable, Mapping

from enclave.executors.base import Executor

log = logging.getLogger("enclave.runner")

HEALTH_EVERY_S = 1.0


class RegionHealth:
    def __init__(
        self,
        executors: Mapping[str, Executor],
        every_s: float = HEALTH_EVERY_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._executors = executors
        self.every_s = every_s
        self._clock = clock
        self._down: frozenset[str] = frozenset()
        self._checked_s = -math.inf
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def refresh(self) -> frozenset[str]:
        """Ask every region's back end now; returns the regions that cannot take work."""
        down = set()
        for name, executor in self._executors.items():
            try:
                health = executor.health()
                healthy, detail = health.healthy, health.detail
            except Exception as exc:  # any failure of the check is a down region, logged
                healthy, detail = False, f"health check failed: {exc!r}"
            if not healthy:
                down.add(name)
            if (name in self._down) != (not healthy) and self._checked_s > -math.inf:
                level = logging.INFO if healthy else logging.WARNING
                log.log(level, "region %s %s: %s", name, "is back" if healthy else "is down", detail)
        self._down = frozenset(down)
        self._checked_s = self._clock()
        return self._down

    def down(self) -> frozenset[str]:
        """The last answer. Without a watcher thread (a loop ticked by hand) it is refreshed
        here once it is HEALTH_EVERY_S old."""
        if self._thread is None and self._clock() - self._checked_s >= self.every_s:
            self.refresh()
        return self._down

    def start(self) -> None:
        self.refresh()
        self._thread = threading.Thread(target=self._run, name="enclave-region-health", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
            self._thread = None

    def _run(self) -> None:
        while not self._stop.wait(self.every_s):
            self.refresh()
