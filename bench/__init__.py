"""Benchmarks of the lineguard risk core (`make bench`)."""
