"""Generation: the engine in named stages (engine.py), a request's images (plan.py), the
sampler table (schedulers.py), reference guidance (reference.py), live previews (preview.py),
the feature cache (deepcache.py) and the typed metadata record (record.py)."""
