"""LoRA training: the data set and plan (torch-free), the trainer and the kohya export (engine)."""
