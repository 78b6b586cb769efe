"""Attrivue backend: the FastAPI service, its database and its job queue. Never imports torch."""
