"""The check of an imported model (cpu queue): load the staged model as its input spec says
and run it on one subject of the dataset; the API stores the run only when this succeeds.

The API stages the upload under ``Storage.model_import_dir(job_id)`` with ``import.json``
(format, spec, config, and the subject to try); the job's end (succeeded, or failed with the
problem as its error) is the answer the waiting request reads.
"""

from __future__ import annotations

import json
import logging

from celery import shared_task

from attrivue_core.imported import IMPORT_FILE
from backend.models import JobStatus
from backend.storage import get_storage
from worker.tasks.common import claimed, finish_job

log = logging.getLogger(__name__)


def run_model_check(job_id: int) -> None:
    from worker.ml.imported import ModelImportError, check_imported

    storage = get_storage()
    folder = storage.model_import_dir(job_id)
    with claimed(job_id) as claim:
        if claim is None:
            return
        try:
            record = json.loads((folder / IMPORT_FILE).read_text())
            subject = record["check"]
            regression = record.get("spec", {}).get("task") == "regression"
            brain = subject.get("brain")
            result = check_imported(
                folder,
                storage.absolute(subject["image"]),
                storage.absolute(brain) if brain else None,
                device="cpu",
                channels=[storage.absolute(c) for c in subject.get("channels", [])],
            )
        except ModelImportError as exc:
            finish_job(claim, JobStatus.failed, message="refused", error=str(exc))
            return
        except FileNotFoundError as exc:  # the request gave up and removed its staging
            finish_job(claim, JobStatus.failed, message="failed", error=f"not staged: {exc}")
            return
        except Exception as exc:
            log.exception("model check %s failed", job_id)
            error = f"the model could not be checked: {type(exc).__name__}: {exc}"
            finish_job(claim, JobStatus.failed, message="failed", error=error)
            return
        finish_job(
            claim,
            JobStatus.succeeded,
            message=(
                f"checked on {subject.get('key', 'a subject')}: output shape "
                f"{result.output_shape}, "
                f"{'prediction' if regression else 'pathological logit'} {result.logit:.4g}"
            ),
        )


@shared_task(name="attrivue.check_model", acks_late=True, reject_on_worker_lost=True)
def check_model_task(job_id: int) -> None:
    run_model_check(job_id)
