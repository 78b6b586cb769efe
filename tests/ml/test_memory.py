"""Issue 16 item 5: the memory estimate's table matches the networks it describes."""

from __future__ import annotations

import typing

import pytest
import torch

from attrivue_core.configs import NetworkName, RunConfig
from attrivue_core.memory import ACTIVATION_BYTES_PER_VOXEL, PARAMETERS, training_memory
from worker.ml.nets import build_network


def test_every_network_has_an_estimate() -> None:
    assert set(ACTIVATION_BYTES_PER_VOXEL) == set(typing.get_args(NetworkName))
    assert set(PARAMETERS) == set(typing.get_args(NetworkName))


@pytest.mark.parametrize("name", ["small_cnn", "unet", "patchgan"])
def test_activation_bytes_match_a_measurement(name: str) -> None:
    """What a forward pass keeps for backward (weights excluded), per voxel and image."""
    torch.set_num_threads(1)
    net = build_network(name)
    weights = {p.data_ptr() for p in net.parameters()}
    assert sum(p.numel() for p in net.parameters()) == PARAMETERS[name]
    saved: dict[tuple[int, int], int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        if t.data_ptr() not in weights:
            saved[(t.data_ptr(), t.numel())] = t.numel() * t.element_size()
        return t

    grid = 48
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        net(torch.randn(2, 1, grid, grid, grid, requires_grad=True))
    per_voxel = sum(saved.values()) / 2 / grid**3
    assert per_voxel == pytest.approx(ACTIVATION_BYTES_PER_VOXEL[name], rel=0.1)


def test_the_audit_config_is_far_over_a_worker() -> None:
    """densenet121 on 512^3 (the audit's run) needs hundreds of GiB; the default run little."""
    huge = training_memory(RunConfig(network="densenet121", grid=(512, 512, 512)))
    assert huge.gib > 100
    assert training_memory(RunConfig()).gib < 2
    with_ig = RunConfig(
        loss_setting="lc_la_supervised", train_attribution=["integrated_gradients"], ig_steps=32
    )
    assert training_memory(with_ig).gib > training_memory(RunConfig()).gib
