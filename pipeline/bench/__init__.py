"""Benchmarks: operators, models, side-by-side training comparisons, scaling with volume size.

Every benchmark measures in one run on the machine at hand and writes machine-readable results (JSON, CSV)
beside a printed table; ratios are only meaningful within one run. :mod:`.report` turns the JSON results
files into docs/benchmarks.md.
"""
