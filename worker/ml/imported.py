"""Imported models: load a TorchScript file or a MONAI bundle as a run's network, check it
with a forward pass, and pick a run's network whether it was trained here or imported.

An imported model is wrapped in ``LogitOf``, which keeps the output's ``logit_index`` along the
second dimension: the rest of ``worker.ml`` then sees it as one of its own classifiers (the
pathological logit per image, ``worker.ml.nets.pathological_logit``), and every attribution
method runs on it unchanged. An imported regression model (``ModelInputSpec.task``) is wrapped
the same way: ``output[:, index]`` is its prediction, and its maps explain that prediction as a
trained regression run's explain ``RegressionHead``'s (``worker.ml.regression``).

A MONAI bundle is read with ``monai.bundle``: ``load_bundle_config`` reads
``configs/metadata.json`` and ``configs/inference.json``, the network is the parsed
``network_def`` and its weights are ``models/model.pt`` (a state dict, or a checkpoint dict
holding one under ``"model"``, as MONAI's ``CheckpointLoader`` reads it), or the bundle's
TorchScript ``models/model.ts``. A bundle's configs are code to MONAI (``$`` expressions,
``_target_``): ``check_network_def`` lets through only a network of ``monai.networks.nets``
built from plain values, so an upload runs nothing on the worker but that constructor.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import monai.networks.nets as monai_nets
import torch
from monai.bundle import load_bundle_config
from torch import nn

from attrivue_core.configs import RunConfig
from attrivue_core.imported import (
    BUNDLE_DIR,
    EXPORT_FILE,
    IMPORT_FILE,
    IMPORTED_DIR,
    TORCHSCRIPT_FILE,
    ModelInputSpec,
)
from worker.ml.regression import build_model
from worker.ml.training.checkpoints import BEST_CHECKPOINT, LAST_CHECKPOINT, load_model
from worker.ml.transforms import subject_on_grid

__all__ = [
    "ImportCheck",
    "LogitOf",
    "ExportedNet",
    "ModelImportError",
    "check_imported",
    "check_network_def",
    "load_bundle_network",
    "load_imported",
    "load_run_model",
    "network_from_config",
]

NETWORK_ID = "network_def"  # MONAI's name for the network in a bundle's configs


class ModelImportError(ValueError):
    """The model cannot be used as its input spec says; the message names the problem."""


class LogitOf(nn.Module):
    """An imported network seen as one output per image: ``output[:, index]``, the
    pathological logit of a classifier or the prediction of a regression model (an output
    ``(B,)`` passes through when ``index`` is 0); a tuple or list output takes its first
    element."""

    def __init__(self, net: nn.Module, index: int) -> None:
        super().__init__()
        self.net = net
        self.index = index
        inner = getattr(net, "gradcam_layer_name", None)
        if isinstance(inner, str):  # an Attrivue network exported and imported again
            self.gradcam_layer_name = f"net.{inner}"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.net(x)
        if isinstance(out, (tuple, list)):
            out = out[0]
        if not isinstance(out, torch.Tensor):
            raise ModelImportError(f"the model returned {type(out).__name__}, not a tensor")
        if out.ndim == 1:
            if self.index != 0:
                raise ModelImportError(
                    f"the model's output has shape {tuple(out.shape)} (one value per image): "
                    f"logit_index must be 0, not {self.index}"
                )
            return out
        if self.index >= out.shape[1]:
            raise ModelImportError(
                f"logit_index {self.index} is out of range: the model's output has shape "
                f"{tuple(out.shape)} ({out.shape[1]} outputs per image)"
            )
        return out[:, self.index]


def network_from_config(config: Mapping[str, Any]) -> nn.Module:
    """The untrained network of a run config (``RunConfig`` fields): what an exported
    bundle's ``network_def`` instantiates before its weights are loaded."""
    return build_model(RunConfig.model_validate(dict(config)))


def _bundle_parser(root: Path) -> Any:
    if not (root / "configs" / "metadata.json").is_file():
        raise ModelImportError("the bundle has no configs/metadata.json")
    if not (root / "configs" / "inference.json").is_file():
        raise ModelImportError("the bundle has no configs/inference.json")
    try:
        parser = load_bundle_config(str(root), "inference.json")
    except Exception as exc:
        raise ModelImportError(f"the bundle's configs cannot be read: {exc}") from None
    parser["bundle_root"] = str(root)
    return parser


def bundle_metadata(root: Path) -> dict[str, Any]:
    """The bundle's ``configs/metadata.json``, as ``monai.bundle`` reads it."""
    meta = _bundle_parser(root).get("_meta_")
    return dict(meta) if isinstance(meta, Mapping) else {}


# What an imported bundle's network_def may name: a network of MONAI's, or the one that an
# exported Attrivue run names. Anything else would run the uploader's code on the worker.
_ALLOWED_TARGET_PREFIX = "monai.networks.nets."
_ALLOWED_TARGETS = frozenset({"worker.ml.imported.network_from_config"})
# Config keys that change how MONAI parses (a debugger, side imports, other items first).
_REFUSED_KEYS = frozenset({"_mode_", "_requires_"})


def _allowed_target(target: object) -> bool:
    if not isinstance(target, str):
        return False
    if target in _ALLOWED_TARGETS:
        return True
    if target.startswith(_ALLOWED_TARGET_PREFIX):
        rest = target.removeprefix(_ALLOWED_TARGET_PREFIX)
        return rest.isidentifier() and isinstance(getattr(monai_nets, rest, None), type)
    # MONAI resolves a bare class name among its modules: only its networks are allowed.
    return target.isidentifier() and isinstance(getattr(monai_nets, target, None), type)


def check_network_def(raw: object, where: str = NETWORK_ID) -> None:
    """Refuse a ``network_def`` that would run code when parsed.

    MONAI evaluates ``$`` expressions, follows ``@`` references to other items and ``%``
    macros to other files, and calls whatever ``_target_`` names. An imported network_def may
    only be plain values and networks of ``monai.networks.nets`` (or an exported Attrivue
    run's ``worker.ml.imported.network_from_config``); nothing in it is run but the network's
    own constructor. Raises ``ModelImportError`` naming the offending entry.
    """
    refusal = (
        "is not allowed: the server does not run a bundle's code, so network_def may only "
        f"build a network of {_ALLOWED_TARGET_PREFIX.rstrip('.')} from plain values"
    )
    if isinstance(raw, str):
        if raw[:1] in ("$", "@", "%"):
            raise ModelImportError(f"{where} = {raw[:80]!r} {refusal}")
        return
    if isinstance(raw, Mapping):
        for key, value in raw.items():
            if key in _REFUSED_KEYS:
                raise ModelImportError(f"{where}.{key} {refusal}")
            if key == "_target_":
                if not _allowed_target(value):
                    raise ModelImportError(f"{where}._target_ = {str(value)[:80]!r} {refusal}")
                continue
            check_network_def(value, f"{where}.{key}")
        return
    if isinstance(raw, (list, tuple)):
        for index, value in enumerate(raw):
            check_network_def(value, f"{where}[{index}]")
        return
    if raw is not None and not isinstance(raw, (bool, int, float)):
        raise ModelImportError(f"{where} is a {type(raw).__name__}: {refusal}")


def load_bundle_network(root: Path, device: str | torch.device = "cpu") -> nn.Module:
    """The network of a MONAI bundle with its weights: ``models/model.pt`` loaded into the
    parsed ``network_def``, or the TorchScript ``models/model.ts``."""
    weights, scripted = root / "models" / "model.pt", root / "models" / "model.ts"
    if not weights.is_file():
        if scripted.is_file():
            return _load_torchscript(scripted, device)
        raise ModelImportError("the bundle has neither models/model.pt nor models/model.ts")
    parser = _bundle_parser(root)
    if NETWORK_ID not in parser:
        raise ModelImportError(f"the bundle's configs/inference.json defines no {NETWORK_ID}")
    raw = parser.get(NETWORK_ID)
    if not isinstance(raw, Mapping):
        raise ModelImportError(
            f"the bundle's {NETWORK_ID} is not a network definition (a _target_ and its arguments)"
        )
    check_network_def(raw)
    try:
        net = parser.get_parsed_content(NETWORK_ID, instantiate=True)
    except Exception as exc:
        raise ModelImportError(f"the bundle's {NETWORK_ID} cannot be built: {exc}") from None
    if not isinstance(net, nn.Module):
        raise ModelImportError(f"the bundle's {NETWORK_ID} is {type(net).__name__}, not a network")
    try:
        state = torch.load(weights, map_location=device, weights_only=True)
    except Exception as exc:
        raise ModelImportError(f"models/model.pt is not a weights file: {exc}") from None
    if isinstance(state, Mapping) and isinstance(state.get("model"), Mapping):
        state = state["model"]  # a checkpoint dict, as MONAI's CheckpointLoader reads it
    if not isinstance(state, Mapping):
        raise ModelImportError("models/model.pt holds no state dict")
    try:
        net.load_state_dict(dict(state))
    except Exception as exc:
        raise ModelImportError(f"models/model.pt does not fit {NETWORK_ID}: {exc}") from None
    return net.to(device)


def _load_torchscript(path: Path, device: str | torch.device) -> nn.Module:
    try:
        return torch.jit.load(str(path), map_location=device)
    except Exception as exc:
        raise ModelImportError(f"not a TorchScript model (torch.jit.save): {exc}") from None


class ExportedNet(nn.Module):
    """A ``torch.export`` program as a module. Its graph was traced in one mode (export it in
    eval mode), and the module ``torch.export`` gives back refuses ``train()``/``eval()``:
    switching modes here leaves it alone."""

    def __init__(self, program_module: nn.Module) -> None:
        super().__init__()
        self.program = program_module

    def train(self, mode: bool = True) -> ExportedNet:
        self.training = mode
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.program(x)


def _load_export(path: Path, device: str | torch.device) -> nn.Module:
    try:
        program = torch.export.load(str(path))
    except Exception as exc:
        raise ModelImportError(f"not a torch.export program (torch.export.save): {exc}") from None
    return ExportedNet(program.module()).to(device)


def load_imported(directory: Path, device: str | torch.device = "cpu") -> tuple[LogitOf, RunConfig]:
    """An imported model from its folder (``import.json`` and the model's files).

    Returns:
        The network wrapped in ``LogitOf``, in eval mode on ``device``, and the run config
        its inputs are preprocessed with.
    """
    record = json.loads((directory / IMPORT_FILE).read_text())
    spec = ModelInputSpec.model_validate(record["spec"])
    config = RunConfig.model_validate(record["config"])
    if record["format"] == "torchscript":
        net = _load_torchscript(directory / TORCHSCRIPT_FILE, device)
    elif record["format"] == "monai_bundle":
        net = load_bundle_network(directory / BUNDLE_DIR, device)
    elif record["format"] == "torch_export":
        net = _load_export(directory / EXPORT_FILE, device)
    else:
        raise ModelImportError(f"unknown model format {record['format']!r}")
    model = LogitOf(net, spec.logit_index).to(device).eval()
    for parameter in model.parameters():
        parameter.requires_grad_(False)  # attributions differentiate the input only
    return model, config


def load_run_model(
    checkpoint_dir: Path, device: str | torch.device = "cpu"
) -> tuple[nn.Module, RunConfig]:
    """A run's network and config: its imported model (``imported/``), else ``best.pt``,
    else ``last.pt``."""
    imported = checkpoint_dir / IMPORTED_DIR
    if (imported / IMPORT_FILE).is_file():
        return load_imported(imported, device)
    checkpoint = checkpoint_dir / BEST_CHECKPOINT
    if not checkpoint.exists():
        checkpoint = checkpoint_dir / LAST_CHECKPOINT
    return load_model(checkpoint, device=device)


@dataclass(frozen=True)
class ImportCheck:
    """What the forward pass of a validation saw."""

    output_shape: list[int]
    logit: float


def _metadata_input(meta: Mapping[str, Any]) -> Mapping[str, Any]:
    inputs = (meta.get("network_data_format") or {}).get("inputs") or {}
    if not isinstance(inputs, Mapping) or not inputs:
        return {}
    first = inputs.get("image", next(iter(inputs.values())))
    return first if isinstance(first, Mapping) else {}


def _check_metadata(root: Path, spec: ModelInputSpec) -> None:
    """The spec against the bundle's ``network_data_format`` (where it gives numbers)."""
    image = _metadata_input(bundle_metadata(root))
    channels = image.get("num_channels")
    if isinstance(channels, int) and channels != spec.channels:
        raise ModelImportError(
            f"the input spec says {spec.channels} channel(s), the bundle's "
            f"configs/metadata.json says num_channels {channels}"
        )
    shape = image.get("spatial_shape")
    if (
        isinstance(shape, list)
        and len(shape) == 3
        and all(isinstance(v, int) for v in shape)
        and tuple(shape) != tuple(spec.grid)
    ):
        raise ModelImportError(
            f"the input spec's grid {list(spec.grid)} differs from the bundle's spatial_shape "
            f"{shape} (configs/metadata.json)"
        )


def check_imported(
    directory: Path,
    image_path: Path,
    brain_path: Path | None = None,
    *,
    device: str | torch.device = "cpu",
    channels: Sequence[Path] = (),
) -> ImportCheck:
    """Load a staged import and run it on one subject preprocessed as its spec says
    (``image_path`` and the images of its other ``channels``: a multi-modal subject is
    checked with all of its modalities, stacked as in training).

    Raises:
        ModelImportError: The model cannot be loaded, its spec contradicts the bundle's
            metadata, the forward pass fails, or its output has no finite logit at
            ``logit_index``.
    """
    record = json.loads((directory / IMPORT_FILE).read_text())
    spec = ModelInputSpec.model_validate(record["spec"])
    if record["format"] == "monai_bundle":
        _check_metadata(directory / BUNDLE_DIR, spec)
    model, config = load_imported(directory, device)
    image = subject_on_grid(config, image_path, channels, brain_path).as_tensor()
    image = image[None].float().to(device)
    if image.shape[1] != spec.channels:
        raise ModelImportError(
            f"the input spec says {spec.channels} channel(s); the dataset's subjects have "
            f"{image.shape[1]}"
        )
    shape = [1, spec.channels, *spec.grid]
    try:
        with torch.no_grad():
            raw = model.net(image)
            out = model(image)
    except ModelImportError:
        raise
    except Exception as exc:
        first = str(exc).strip().splitlines()
        reason = first[-1] if first else type(exc).__name__
        raise ModelImportError(
            f"the forward pass on an input of shape {shape} (channels and grid of the input "
            f"spec) failed: {type(exc).__name__}: {reason}"
        ) from None
    if isinstance(raw, (tuple, list)):
        raw = raw[0]
    if record["format"] == "torch_export":
        try:  # attributions run batches of interpolated images through it
            with torch.no_grad():
                model(image.expand(2, *image.shape[1:]))
        except Exception:
            raise ModelImportError(
                "the torch.export program takes one image at a time: export it with a dynamic "
                "batch dimension (dynamic_shapes={'x': {0: torch.export.Dim('batch')}})"
            ) from None
    if out.shape[0] != 1:
        raise ModelImportError(
            f"the model's output {list(raw.shape)} has no batch dimension first (1 image in, "
            f"{out.shape[0]} rows out)"
        )
    logit = float(out.reshape(-1).float().mean())
    if not math.isfinite(logit):
        what = "prediction" if spec.task == "regression" else "output"
        raise ModelImportError(f"the model's {what} at logit_index {spec.logit_index} is {logit}")
    return ImportCheck(output_shape=[int(v) for v in raw.shape], logit=logit)
