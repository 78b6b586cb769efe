"""Run pages on the stub API (tests/e2e/stub_api.py): two finished runs with different curves,
the second launched from the reviews of the first, both streamed as Server-Sent Events like
the real /runs/{id}/events; a missing run (404) and a forbidden one (403).
"""

from __future__ import annotations

from dataclasses import dataclass

from tests.e2e.stub_api import StubApi

PARENT_RUN = 3
CHILD_RUN = 4
MISSING_RUN = 98
FORBIDDEN_RUN = 99
FORBIDDEN_DETAIL = "not a member of this run's project"


@dataclass(frozen=True)
class Curves:
    loss_c: list[float]
    loss_a: list[float]
    val_auroc: list[float]


# Different lengths and values, so that a curve of one run cannot pass for the other's.
CURVES = {
    PARENT_RUN: Curves(
        loss_c=[0.69, 0.52, 0.41],
        loss_a=[40.0, 31.0, 24.0],
        val_auroc=[0.61, 0.72, 0.81],
    ),
    CHILD_RUN: Curves(
        loss_c=[0.68, 0.6, 0.44, 0.35, 0.3],
        loss_a=[12.0, 8.0, 5.5, 4.0, 3.1],
        val_auroc=[0.55, 0.63, 0.7, 0.76, 0.88],
    ),
}


def metric_points(run_id: int) -> list[dict]:
    curves = CURVES[run_id]
    points = []
    for name in ("loss_c", "loss_a", "val_auroc"):
        for epoch, value in enumerate(getattr(curves, name), start=1):
            points.append({"name": name, "epoch": epoch, "step": None, "value": value})
    return points


def _run(api: StubApi, run_id: int, parent: int | None) -> dict:
    curves = CURVES[run_id]
    return {
        **api.run,
        "id": run_id,
        "name": f"stub run {run_id}" + (" · from reviews" if parent else ""),
        "status": "succeeded",
        "from_reviews_of": parent,
        "job_id": 100 + run_id,
        "config": {**api.run["config"], "epochs": len(curves.loss_c), "loss_setting": "lc_only"},
        "metrics": {"test_auroc": curves.val_auroc[-1], "test_accuracy": 0.75},
    }


def job_body(api: StubApi, job_id: int) -> dict:
    return {
        "id": job_id,
        "kind": "train",
        "status": "succeeded",
        "progress": 1.0,
        "message": "done",
        "attempts": 1,
        "cancel_requested": False,
        "error": None,
        "worker": "stub",
        "created_at": api.created,
        "started_at": api.created,
        "heartbeat_at": api.created,
        "finished_at": api.created,
    }


def add_runs(api: StubApi) -> dict[int, dict]:
    """Adds the run page's routes for PARENT_RUN and CHILD_RUN and the two unreadable runs."""
    runs = {PARENT_RUN: _run(api, PARENT_RUN, None), CHILD_RUN: _run(api, CHILD_RUN, PARENT_RUN)}
    base = "/api/v1"
    api.extra_json[f"{base}/projects/1"] = {
        "id": 1,
        "name": "stub project",
        "description": "",
        "created_at": api.created,
        "role": "researcher",
    }
    api.extra_json[f"{base}/runs"] = {"data": list(runs.values()), "count": len(runs)}
    for run_id, run in runs.items():
        points = metric_points(run_id)
        job = job_body(api, run["job_id"])
        api.extra_json[f"{base}/runs/{run_id}"] = run
        api.extra_json[f"{base}/runs/{run_id}/metrics"] = {"data": points, "count": len(points)}
        api.extra_json[f"{base}/jobs/{job['id']}"] = job
        api.extra_json[f"{base}/runs/{run_id}/epoch-maps"] = {"data": [], "count": 0}
        api.extra_json[f"{base}/runs/{run_id}/corrections"] = {
            "run_id": run_id,
            "n_reviews": 0,
            "n_subjects": 0,
            "subjects": [],
        }
        api.extra_json[f"{base}/runs/{run_id}/corrected-targets"] = {
            "run_id": run_id,
            "from_reviews_of": None,
            "subjects": [],
        }
        api.sse_routes[f"{base}/runs/{run_id}/events"] = [
            ("run", run),
            ("job", job),
            ("metrics", {"run_id": run_id, "data": points}),
        ]
    compared = [runs[PARENT_RUN], runs[CHILD_RUN]]
    api.extra_json[f"{base}/runs/compare"] = {
        "runs": compared,
        "config": [
            {"key": "epochs", "values": [r["config"]["epochs"] for r in compared], "differs": True}
        ],
        "differing": ["epochs"],
        "metrics": [
            {
                "key": "test_auroc",
                "values": [r["metrics"]["test_auroc"] for r in compared],
                "differs": True,
            }
        ],
        "series": [
            {
                "run_id": run["id"],
                "name": name,
                "epochs": list(range(1, len(getattr(CURVES[run["id"]], name)) + 1)),
                "values": getattr(CURVES[run["id"]], name),
            }
            for name in ("loss_a", "loss_c", "val_auroc")
            for run in compared
        ],
    }
    for run_id in (MISSING_RUN, FORBIDDEN_RUN):
        status, detail = (
            (404, "Run not found") if run_id == MISSING_RUN else (403, FORBIDDEN_DETAIL)
        )
        for tail in ("", "/events", "/metrics"):
            api.errors[f"{base}/runs/{run_id}{tail}"] = (status, detail)
    return runs
