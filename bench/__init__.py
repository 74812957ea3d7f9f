"""Benchmarks: our pipeline's figures side by side with peers (`make bench`, `python -m bench.run`)."""
