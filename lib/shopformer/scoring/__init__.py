"""Scores: nightly pandas-UDF inference into scores.*, score quality and SQL views."""
