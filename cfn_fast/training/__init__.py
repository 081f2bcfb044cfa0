"""Training: the loop around an engine (lr schedule, evaluation, early stopping, divergence) and the
validation run behind ``kind="auto"``."""
