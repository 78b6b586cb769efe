"""Thin task shells: a job id in, the row re-read, the science called, results written."""
