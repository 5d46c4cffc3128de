"""Memory measurement shared by the benchmark scripts (Linux)."""

from __future__ import annotations

import os
import resource
import threading
import time

PAGE = os.sysconf("SC_PAGE_SIZE")


def maxrss_mb() -> float:
    """Peak resident set size of this process so far, in MB."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # KiB on Linux


def rss_mb() -> float:
    """Current resident set size, in MB."""
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * PAGE / 2**20


class RssSampler:
    """Samples the current RSS every ``every`` seconds in a thread; ``peak`` is the largest seen."""

    def __init__(self, every: float = 0.01):
        self.every, self.peak, self._stop = every, 0.0, threading.Event()

    def __enter__(self):
        self.start = self.peak = rss_mb()
        self._t = threading.Thread(target=self._run, daemon=True)
        self._t.start()
        return self

    def _run(self):
        while not self._stop.is_set():
            self.peak = max(self.peak, rss_mb())
            time.sleep(self.every)

    def __exit__(self, *exc):
        self._stop.set()
        self._t.join()
        self.peak = max(self.peak, rss_mb())
        self.end = rss_mb()
