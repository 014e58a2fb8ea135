"""Per-user job control: Stop flags per browser session (Stop ends only the presser's own job),
and a jobs-per-minute limit per user.

The engine polls `should_stop` from diffusers' step callback; nothing else is needed (no
cancellation of Gradio events, which would throw away the images already finished).
"""

from __future__ import annotations

import threading
import time
from collections import deque

from .errors import InvalidRequest


class JobControl:
    def __init__(self, jobs_per_minute: int = 0) -> None:
        self._lock = threading.Lock()
        self._flags: dict[str, threading.Event] = {}
        self.jobs_per_minute = jobs_per_minute
        self._started: dict[str, deque] = {}

    def admit(self, user: str, now: float | None = None) -> None:
        """Count a job for `user`; InvalidRequest when they are over their jobs per minute."""
        if not self.jobs_per_minute:
            return
        now = time.monotonic() if now is None else now
        with self._lock:
            times = self._started.setdefault(user, deque())
            while times and now - times[0] >= 60:
                times.popleft()
            if len(times) >= self.jobs_per_minute:
                wait = 60 - (now - times[0])
                raise InvalidRequest(f"This studio allows {self.jobs_per_minute} jobs a minute per user; "
                                     f"try again in {wait:.0f} s.")
            times.append(now)

    def begin(self, session: str) -> threading.Event:
        """A fresh flag for a new job of this session (an earlier Stop does not carry over)."""
        with self._lock:
            flag = self._flags[session] = threading.Event()
            return flag

    def stop(self, session: str) -> bool:
        """Ask this session's running job to stop; False when it has none."""
        with self._lock:
            flag = self._flags.get(session)
        if flag is None:
            return False
        flag.set()
        return True

    def end(self, session: str, flag: threading.Event) -> None:
        with self._lock:
            if self._flags.get(session) is flag:
                del self._flags[session]
