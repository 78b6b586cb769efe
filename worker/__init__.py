"""Attrivue worker: Celery tasks (worker.tasks) over the science engine (worker.ml)."""
