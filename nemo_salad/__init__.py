"""nemo_salad."""
