"""Research experiments of method.md section 6, run by ``python -m worker.experiments``."""
