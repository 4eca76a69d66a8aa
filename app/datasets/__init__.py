"""Datasets: named record shapes, each with a table of its own (SPEC §10)."""
