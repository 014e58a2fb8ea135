"""Models: the manager that loads one set of weights for every tab (manager.py), the picker that
names them (picker.py), what a model source is (sources.py), single-file checkpoints
(checkpoints.py, layouts.py), the models folder (library.py), LoRAs/embeddings/VAE files
(addons.py, hashes.py), memory modes (memory.py), number formats (precision.py), the fast path
(fast.py), few-step models (fewstep.py), live previews from latents (preview.py), picture
upscalers (upscalers.py) and tiny SD-layout models for tests and the placeholder (tiny.py)."""
