"""The inference system (docs/architecture.md §1, §13): the one inference path (resampling, chunk-wise processing,
trimming), and the Separator API with its file input and output."""
