"""Request bodies carry typed configurations in OpenAPI, not free dicts.

RunCreate.config and FromReviewsCreate.config are RunConfig; AttributionCreate.params and
AttributionBatchCreate.params are AttributionParams (AttributionConfig without ``method``):
object schemas that list every field with its enum, so that clients (frontend/src/forms/
choices.ts) take their choices from the schema. At run time the services still validate them
(after a preset is applied), so a partial config is accepted as before.
"""

from __future__ import annotations

from typing import Any

import pytest

from attrivue_core.configs import AttributionConfig, RunConfig
from backend.openapi import openapi_document
from backend.schemas.attribution import AttributionCreate
from backend.schemas.corrections import FromReviewsCreate
from backend.schemas.run import RunCreate


@pytest.fixture(scope="module")
def schemas() -> dict[str, Any]:
    return openapi_document()["components"]["schemas"]


def _resolve(schemas: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in schema:
        schema = schemas[schema["$ref"].rsplit("/", 1)[-1]]
    return schema


def _enum(schemas: dict[str, Any], schema: dict[str, Any]) -> list[Any] | None:
    schema = _resolve(schemas, schema)
    if "enum" in schema:
        return schema["enum"]
    if "items" in schema:
        return _enum(schemas, schema["items"])
    for option in schema.get("anyOf", []):
        found = _enum(schemas, option)
        if found is not None:
            return found
    return None


@pytest.mark.parametrize(
    ("model", "field"), [("RunCreate", "config"), ("FromReviewsCreate", "config")]
)
def test_run_config_bodies_are_run_config(schemas: dict[str, Any], model: str, field: str) -> None:
    prop = schemas[model]["properties"][field]
    assert prop.get("$ref") == "#/components/schemas/RunConfig"
    config = _resolve(schemas, prop)
    assert config["type"] == "object"
    assert config.get("additionalProperties") is False  # not a free dict
    assert set(config["properties"]) == set(RunConfig.model_fields)
    assert not config.get("required")  # every field has a default: a partial config is valid
    enums = {
        "network": ["small_cnn", "patchgan", "densenet121", "resnet18", "resnet10", "unet"],
        "loss_setting": ["lc_only", "la_only", "lc_la_supervised", "lc_la_unsupervised"],
        "grad_balance": ["none", "fixed_ratio", "gradnorm", "project"],
        "train_attribution": [
            "gradient",
            "gradient_x_input",
            "integrated_gradients",
            "expected_gradients",
        ],
        "task": ["classification", "regression", "segmentation"],
        "device": ["auto", "cpu", "cuda"],
        "attribution_loss": ["bce", "rrr", "mass"],
        "attribution_baseline": ["zero", "healthy", "blur"],
        "evidence_floor": ["off", "after_training", "every_epoch"],
    }
    for name, values in enums.items():
        assert _enum(schemas, config["properties"][name]) == values, name
    lambda_a = _resolve(schemas, config["properties"]["lambda_a"])
    assert _enum(schemas, lambda_a["properties"]["kind"]) == ["constant", "linear_warmup"]
    regression = _resolve(schemas, config["properties"]["regression"])
    assert _enum(schemas, regression["properties"]["constraints"]) == [
        "outside_lesions",
        "zero_target",
        "mass_scaling",
    ]


@pytest.mark.parametrize("model", ["AttributionCreate", "AttributionBatchCreate"])
def test_attribution_params_are_their_own_schema(schemas: dict[str, Any], model: str) -> None:
    prop = schemas[model]["properties"]["params"]
    assert prop.get("$ref") == "#/components/schemas/AttributionParams"
    params = _resolve(schemas, prop)
    assert params["type"] == "object"
    assert params.get("additionalProperties") is False
    assert set(params["properties"]) == set(AttributionConfig.model_fields) - {"method"}
    assert not params.get("required")
    assert _enum(schemas, params["properties"]["baseline"]) == ["zero", "blur", "healthy_mean"]
    assert _enum(schemas, params["properties"]["riemann_method"]) == [
        "gausslegendre",
        "riemann_middle",
        "riemann_trapezoid",
        "riemann_left",
        "riemann_right",
    ]
    # The method is named beside the params, with its own enum.
    method = schemas[model]["properties"]["method"]
    assert "saliency" in _enum(schemas, method)


def test_bodies_keep_the_config_as_given() -> None:
    # The services merge presets into the fields given and validate the result: the body
    # hands them the partial object unchanged, defaults not filled in.
    body = RunCreate.model_validate(
        {"dataset_id": 1, "name": "r", "preset": "classification", "config": {"epochs": 2}}
    )
    assert body.config == {"epochs": 2}
    assert RunCreate.model_validate({"dataset_id": 1, "name": "r"}).config == {}
    assert FromReviewsCreate.model_validate({"name": "r", "config": {"epochs": 9}}).config == {
        "epochs": 9
    }
    made = AttributionCreate.model_validate(
        {"run_id": 1, "subject_id": 2, "method": "saliency", "params": {"steps": 3}}
    )
    assert made.params == {"steps": 3}  # refused by the service, as before, with its message
    with pytest.raises(ValueError):
        RunCreate.model_validate({"dataset_id": 1, "name": "r", "config": [1]})
