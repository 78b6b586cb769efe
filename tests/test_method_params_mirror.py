"""The viewer's copy of each attribution method's parameters and defaults
(frontend/src/viewer/methodParams.json) matches attrivue_core.configs, so that the provenance panel
lists exactly the parameters a map's method used, with the values it used."""

from __future__ import annotations

import json
from pathlib import Path

from attrivue_core.configs import METHOD_FIELDS, AttributionConfig

TABLE = Path(__file__).resolve().parents[1] / "frontend" / "src" / "viewer" / "methodParams.json"


def test_method_params_mirror_the_worker() -> None:
    table = json.loads(TABLE.read_text())
    assert set(table) == set(METHOD_FIELDS)
    fields = AttributionConfig.model_fields
    for method, used in METHOD_FIELDS.items():
        assert set(table[method]) == set(used), method
        for name, value in table[method].items():
            default = fields[name].default
            expected = list(default) if isinstance(default, tuple) else default
            assert value == expected, (method, name, value, expected)
