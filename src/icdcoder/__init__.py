"""icdcoder: automatic ICD coding with faithful re-implementations of the seed systems."""

__version__ = "0.1.0"
