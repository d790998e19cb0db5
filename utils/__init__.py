"""Primitives every layer may use, importing nothing of the project's other packages (docs/architecture.md §1):
atomic writes, audio I/O and resampling, checkpoint files, config files, the command lines' errors and exit codes,
the experiment lock, runtime settings."""
