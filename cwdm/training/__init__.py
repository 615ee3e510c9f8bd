"""Training: settings, the resumable training loop, its state (data order, EMA, checkpoints) and logs."""
