"""Issue 20 item 3's gaps through the API and a real Celery worker: a two-channel model is
imported into a two-channel dataset (the worker's check runs it on both modalities) and its
healthy_mean Integrated Gradients map is computed from the mean of both channels of the
healthy training subjects (both paths read channel 0 only before, and failed)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

from tests.helpers import wait_for
from tests.modalities import two_channel_import
from tests.worker.conftest import PASSWORD
from tests.worker.imported_models import api_client, import_model, torchscript_bytes, worker_process


class TwoChannels(nn.Module):
    """A small 3D classifier of two input channels with one output."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv3d(2, 4, 3, padding=1)
        self.head = nn.Linear(4, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.tanh(self.conv(x)).mean(dim=(2, 3, 4)))


def test_a_two_channel_import_is_checked_and_explained_from_the_healthy_mean(
    stack: dict, tmp_path: Path
) -> None:
    from backend.core.db import session_scope
    from backend.models import AttributionMap
    from backend.services.projects import create_project
    from backend.services.users import create_user

    with session_scope() as session:
        user = create_user(session, username="r", password=PASSWORD, role="researcher")
        create_project(session, name="p", description="", user=user)
    torch.manual_seed(0)
    net = TwoChannels().eval()
    client = api_client("r")
    try:
        dataset_id = two_channel_import(client)
        with worker_process(tmp_path, stack):
            reply = import_model(
                client, dataset_id, "two", torchscript_bytes(net), channels=2, grid=[12, 12, 12]
            )
            assert reply.status_code == 201, reply.text
            run = reply.json()
            assert run["config"]["in_channels"] == 2
            subject = next(
                s
                for s in client.get(f"/api/v1/datasets/{dataset_id}/subjects").json()["data"]
                if s["split"] == "test"
            )
            reply = client.post(
                "/api/v1/attributions",
                json={
                    "run_id": run["id"],
                    "subject_id": subject["id"],
                    "method": "integrated_gradients",
                    "params": {"steps": 4, "baseline": "healthy_mean"},
                },
            )
            assert reply.status_code == 201, reply.text
            map_id = reply.json()["id"]

            def done() -> str | None:
                with session_scope() as session:
                    status = session.get(AttributionMap, map_id).status
                return status if status in ("succeeded", "failed", "cancelled") else None

            status = wait_for(done, timeout=300, interval=0.5, what=f"map {map_id}")
            log = (tmp_path / "worker.log").read_text()[-3000:]
            body = client.get(f"/api/v1/attributions/{map_id}").json()
            assert status == "succeeded", (body, log)
            assert body["stats"]["baseline_subjects"] == 2.0  # the healthy training subjects
            url = f"/api/v1/attributions/{map_id}/channels"
            assert client.get(f"{url}/1.nii.gz").status_code == 200
        # The cached mean has both channels.
        means = list(Path(stack["ATTRIVUE_DATA_DIR"]).rglob("healthy_mean-*.npy"))
        assert len(means) == 1 and np.load(means[0]).shape == (2, 12, 12, 12)
    finally:
        client.__exit__(None, None, None)
