"""Benchmarks, each side by side with the peer it compares to; figures land in bench/results/."""
