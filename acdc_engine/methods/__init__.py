"""Circuit discovery methods."""
