"""Experiment configs, the data-to-tensor path, the trainer and run bookkeeping."""
