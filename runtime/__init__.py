"""What every process needs at run time, and nothing domain-specific: where the database
is, the settings reader, daemon logging, signed sync tokens, CURVE keys, the peer address
behind proxies and retry backoff. It imports nothing else of ours (tests/test_layering.py)."""
