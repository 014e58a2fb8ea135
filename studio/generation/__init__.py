"""Generation: the jobs a backend runs. The engine in named stages (engine.py), a request's
images (plan.py), a fresh scheduler per request (schedulers.py; the names table is
studio/samplers.py), reference guidance (reference.py), the feature cache (deepcache.py),
tiling (tiling.py), the content filter (safety.py), the typed metadata record (record.py), and
an upscale job (upscale.py)."""
