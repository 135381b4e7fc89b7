"""Data, training, inference, evaluation and the command-line interface."""
