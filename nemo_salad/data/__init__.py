"""Data: lhotse datasets, the data module, and offline text corpora."""
