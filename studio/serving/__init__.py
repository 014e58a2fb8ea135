"""Serving: what callers are given. The Studio (studio.py) holds the one model manager; the
dispatcher (dispatcher.py) owns the one GPU queue, fair between users; per-user Stop and rate
limits (jobs.py); content safety (safety.py)."""
