"""Benchmarks: the product's public paths side by side with the raw limits, same data, same run."""
