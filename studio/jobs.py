"""Stop flags per browser session, so Stop ends only the presser's own job.

The engine polls `should_stop` from diffusers' step callback; nothing else is needed (no
cancellation of Gradio events, which would throw away the images already finished).
"""

from __future__ import annotations

import threading


class JobControl:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._flags: dict[str, threading.Event] = {}

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
