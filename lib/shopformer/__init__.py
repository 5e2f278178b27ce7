"""shopformer: Spark + Delta batch jobs that score users with a sequence transformer."""
