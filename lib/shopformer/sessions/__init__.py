"""Silver: bronze.events -> silver.events / silver.sessions (transforms, job)."""
