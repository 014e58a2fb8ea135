"""Fine-tuning on your own pictures: datasets, the LoRA training job, kohya-format export.
Not built yet: issue 24."""
