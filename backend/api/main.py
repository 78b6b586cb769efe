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
# Routes are matched in this order, each request walking the list (three times over, with
# FastAPI's nested routers) until one matches: the jobs router, whose getJob clients poll,
# comes first. No other router's paths start with /jobs, so the order decides nothing else;
# the OpenAPI document sorts its keys and does not change.
for module in (
    jobs,
    auth,
    users,
    projects,
    datasets,
    subjects,
    runs,
    presets,
    corrections,
    attributions,
    reviews,
    health,
    uploads,
    audit,
    evidence,
    shortcuts,
):
    api_router.include_router(module.router)
