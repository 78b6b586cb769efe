"""Imported models: the input spec a model brings along, and where its files live.

A researcher's own network enters a project as an *imported run*: a TorchScript file
(``torch.jit.save``), a ``torch.export`` program (``torch.export.save``) or a MONAI bundle (``configs/metadata.json``, ``configs/inference.json``,
``models/model.pt``), with the input it expects (``ModelInputSpec``). The backend stages the
upload, a worker of the cpu queue loads it and runs a forward pass on one of the dataset's
subjects, and only then is the run stored. Attribution jobs then preprocess a subject as the
spec says (the same code as a trained run's ``RunConfig``) and read the pathological logit at
``logit_index`` of the model's output.

Torch-free: shared by the backend (which validates the spec and stores the files) and the
worker (which loads them).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from attrivue_core.configs import GridSize, RunConfig

__all__ = [
    "BUNDLE_DIR",
    "EXPORT_FILE",
    "IMPORT_FILE",
    "IMPORT_TASKS",
    "IMPORTED_DIR",
    "MODEL_FORMATS",
    "TORCHSCRIPT_FILE",
    "ImportTask",
    "ModelFormat",
    "ModelInputSpec",
]

ModelFormat = Literal["torchscript", "monai_bundle", "torch_export"]
MODEL_FORMATS: tuple[str, ...] = ("torchscript", "monai_bundle", "torch_export")
ImportTask = Literal["classification", "regression"]
IMPORT_TASKS: tuple[str, ...] = ("classification", "regression")

# Inside a run's checkpoint folder (and a staged import's folder): the model and its record.
IMPORTED_DIR = "imported"
IMPORT_FILE = "import.json"  # {"format", "spec", "config"}: what the worker loads it with
TORCHSCRIPT_FILE = "model.ts"
EXPORT_FILE = "model.pt2"  # a torch.export program (torch.export.save)
BUNDLE_DIR = "bundle"  # the bundle's root: configs/, models/


class ModelInputSpec(BaseModel):
    """What an imported model takes and which of its outputs is explained: the pathological
    logit of a classifier, or the prediction of a regression model.

    Attributes:
        channels: Image channels the network takes: the number of modalities of the dataset's
            subjects (1 for one image each); the check runs it on all of them, stacked.
        grid: Working grid (voxels) every subject is resized to before the forward pass.
        intensity: Intensity normalisation, as a trained run's (``RunConfig.intensity``).
        brain: Brain handling, as a trained run's (``RunConfig.brain``).
        logit_index: Index along the output's second dimension (``output[:, logit_index]``)
            that is the pathological logit (or, for regression, the predicted target); an
            output of shape ``(B,)`` takes 0.
        task: ``classification`` (the output is a logit) or ``regression`` (the output is the
            predicted target, in its units): the imported run's ``RunConfig.task``. Its maps
            explain ``output[:, logit_index]`` either way, as a trained regression run's
            explain its prediction; a regression run has no per-subject predictions, so no
            shortcut report.
    """

    model_config = ConfigDict(extra="forbid")

    channels: int = Field(default=1, ge=1, le=16)
    grid: tuple[GridSize, GridSize, GridSize]
    intensity: Literal["zscore", "percentile"] = "zscore"
    brain: Literal["mask", "nonzero"] = "mask"
    logit_index: int = Field(default=0, ge=0, le=1023)
    task: ImportTask = "classification"

    def run_config(self) -> dict[str, Any]:
        """The run config an imported run is stored with: the preprocessing fields of the
        spec, the rest at their defaults (the model was not trained here)."""
        config = RunConfig(
            grid=self.grid,
            intensity=self.intensity,
            brain=self.brain,
            in_channels=self.channels,  # the memory estimate counts them
            task=self.task,
            val_attribution=False,
        )
        return config.model_dump(mode="json")
