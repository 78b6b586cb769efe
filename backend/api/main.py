"""The v1 API router: includes the resource routers, nothing else."""

from fastapi import APIRouter

from backend.api.routes import (
    attributions,
    audit,
    auth,
    corrections,
    datasets,
    health,
    jobs,
    presets,
    projects,
    reviews,
    runs,
    subjects,
    uploads,
    users,
)

api_router = APIRouter()
for module in (
    auth,
    users,
    projects,
    datasets,
    subjects,
    runs,
    presets,
    corrections,
    jobs,
    attributions,
    reviews,
    health,
    uploads,
    audit,
):
    api_router.include_router(module.router)
