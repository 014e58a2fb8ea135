"""Serving: what callers are given. The Studio (studio.py) is the front door: requests checked,
submitted, stopped, and what the pages ask of the models and outputs; the dispatcher
(dispatcher.py) owns the one queue, fair between users, and hands each job to a backend
(backend.py: the `Backend` protocol and the in-process one; the Ray one is studio/workers/); a
caller's run of several jobs (sequence.py); per-user rate limits (rate_limit.py)."""
