"""Live mode: a picture that follows the prompt, the sliders and the canvas as they change.

Each change is one ordinary request in the dispatcher's live lane (latest wins: a session has one
live job running and at most one waiting; newer input replaces the waiting one), with a fixed seed,
one picture, not saved until the user keeps it (`Studio.live`, `Studio.keep`). `session.py` holds
what one browser session's Live needs: its seed, its last picture and the frames per second it
achieves. The UI is studio/ui/live.py; the API is `/live`.
"""
