"""Machine-learning core of Attrivue: data I/O, synthetic data, networks and attribution.

Nothing here imports the web, queue or database layers, so the same code runs in the worker,
in notebooks and in tests.
"""
