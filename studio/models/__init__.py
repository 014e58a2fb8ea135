"""Models: the manager that loads one set of weights for every tab (models/manager.py), what a
model source is (sources.py), single-file checkpoints (checkpoints.py), the models folder
(library.py), LoRAs/embeddings/VAE files (addons.py), memory modes (memory.py), the fast path
(fast.py) and tiny SD-layout models for tests and the placeholder (tiny.py)."""
