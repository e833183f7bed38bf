"""Shared by the bench/ scripts: the rows of an aligner_bench --benchmark_format=csv file."""
import csv


def rows(path):
    """The benchmark rows of a CSV file (Google Benchmark writes context lines before the header)."""
    with open(path) as f:
        lines = f.read().splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("name,"))
    return list(csv.DictReader(lines[start:]))
