"""The request bodies' configurations, typed in OpenAPI by attrivue_core's own models.

A run's ``config`` and an attribution's ``params`` arrive as plain objects and stay dicts here:
the services validate them (``backend.services.runs.validate_config``,
``backend.services.attributions.validate_params``) after applying a preset or adding the
method, so that a partial config is accepted and a refusal reads "invalid run config:
config.<field>: ...". Their OpenAPI schema is the model they are validated against, so that
clients (frontend/src/api/schema.d.ts) see every field, its bounds and its choices.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BeforeValidator, ConfigDict, create_model

from attrivue_core.configs import AttributionConfig, RunConfig

__all__ = ["AttributionParams", "AttributionParamsBody", "RunConfigBody"]


def _unchanged(value: Any) -> Any:
    return value


# Every field of RunConfig has a default: a partial object is valid, the rest keep the
# preset's values or the defaults.
RunConfigBody = Annotated[
    dict[str, Any], BeforeValidator(_unchanged, json_schema_input_type=RunConfig)
]

# AttributionConfig without ``method``, which the request names beside the params. Each method
# reads some of these fields only (METHOD_FIELDS); the service refuses the others.
_PARAM_FIELDS: dict[str, Any] = {
    name: (field.annotation, field)
    for name, field in AttributionConfig.model_fields.items()
    if name != "method"
}
AttributionParams = create_model(
    "AttributionParams",
    __config__=ConfigDict(extra="forbid"),
    __doc__="Parameters of an attribution method (AttributionConfig without ``method``); each "
    "method reads some of them only, and giving another one a value is refused.",
    **_PARAM_FIELDS,
)

AttributionParamsBody = Annotated[
    dict[str, Any], BeforeValidator(_unchanged, json_schema_input_type=AttributionParams)
]
