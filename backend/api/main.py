"""The v1 API router: includes the resource routers, nothing else."""

from fastapi import APIRouter

from backend.api.routes import attributions, auth, datasets, health, jobs, runs, subjects

api_router = APIRouter()
for module in (auth, datasets, subjects, runs, jobs, attributions, health):
    api_router.include_router(module.router)
