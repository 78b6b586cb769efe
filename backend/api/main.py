"""The v1 API router: includes the resource routers, nothing else."""

from fastapi import APIRouter

from backend.api.routes import (
    attributions,
    audit,
    auth,
    corrections,
    datasets,
    evidence,
    health,
    jobs,
    presets,
    projects,
    reviews,
    runs,
    shortcuts,
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
    evidence,
    shortcuts,
):
    api_router.include_router(module.router)
