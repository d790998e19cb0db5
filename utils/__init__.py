"""Shared utilities: configuration, audio I/O, resampling, checkpoints, losses and metrics."""
