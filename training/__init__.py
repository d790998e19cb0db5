"""The training system (docs/architecture.md §1, §12): the Lightning module and data module, losses and metrics,
config validation, checkpoint callbacks, the engines of train.py and eval.py, bundling an experiment into a model
folder, and warm-start."""
