"""Bronze: raw landing files -> bronze.events / bronze.events_rejected (sources, transforms, job)."""
