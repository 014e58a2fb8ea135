"""Per-user rate limits: each user (a login name, else a browser session) may start N jobs a
minute. The dispatcher asks before it queues a job; Stop and the queue live there too."""

from __future__ import annotations

import threading
import time
from collections import deque

from studio.errors import TooManyJobs


class RateLimiter:
    def __init__(self, jobs_per_minute: int = 0) -> None:
        self._lock = threading.Lock()
        self.jobs_per_minute = jobs_per_minute      # 0: no limit
        self._started: dict[str, deque] = {}

    def admit(self, user: str, now: float | None = None) -> None:
        """Count a job for `user`; TooManyJobs when they are over their jobs per minute."""
        if not self.jobs_per_minute:
            return
        now = time.monotonic() if now is None else now
        with self._lock:
            times = self._started.setdefault(user, deque())
            while times and now - times[0] >= 60:
                times.popleft()
            if len(times) >= self.jobs_per_minute:
                wait = 60 - (now - times[0])
                raise TooManyJobs(f"This studio allows {self.jobs_per_minute} jobs a minute per user; "
                                     f"try again in {wait:.0f} s.")
            times.append(now)
