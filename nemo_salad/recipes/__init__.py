"""Training entry points shared by the example scripts."""
