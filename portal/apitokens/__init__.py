"""Personal API tokens for the REST API: hashed at rest, shown once, revocable."""
