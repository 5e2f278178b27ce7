"""Gold: silver -> point-in-time user snapshots, vocabularies and item text vectors."""
