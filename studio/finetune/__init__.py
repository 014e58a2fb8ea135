"""Fine-tuning on your own pictures (a LoRA): datasets and captions (dataset.py), presets and the
one total of steps (settings.py), the job folder both sides share (folder.py), the server's side
of the jobs (jobs.py: start, stop, resume, list; no torch), the run in its own process
(trainer.py, `python -m studio.finetune --job FOLDER`) and the kohya-layout export (export.py).
The measurement on the embedded model's world is embedded/finetune_measure.py."""
