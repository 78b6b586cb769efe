"""Research experiments with their own command-line options (``python -m worker.experiments``)."""
