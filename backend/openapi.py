"""The app's OpenAPI document, without starting a server.

``python -m backend.openapi [OUT]`` writes it as JSON with sorted keys to OUT (or stdout).
``make openapi`` writes frontend/openapi.json and generates the frontend's types from it.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

__all__ = ["openapi_document", "openapi_json", "main"]


@contextmanager
def _scratch_settings() -> Iterator[None]:
    """Settings on a throwaway data directory, so building the app touches nothing real."""
    from backend.core.config import get_settings

    saved = {name: os.environ.get(name) for name in ("ATTRIVUE_DATA_DIR",)}
    with tempfile.TemporaryDirectory(prefix="attrivue-openapi-") as scratch:
        os.environ["ATTRIVUE_DATA_DIR"] = scratch
        get_settings.cache_clear()
        try:
            yield
        finally:
            for name, value in saved.items():
                if value is None:
                    os.environ.pop(name, None)
                else:
                    os.environ[name] = value
            get_settings.cache_clear()


def openapi_document() -> dict[str, Any]:
    """The OpenAPI document that the app serves at /api/v1/openapi.json."""
    from backend.main import create_app

    with _scratch_settings():
        return create_app().openapi()


def openapi_json(document: dict[str, Any] | None = None) -> str:
    """The document as the committed file holds it: sorted keys, two-space indent, final newline."""
    if document is None:
        document = openapi_document()
    return json.dumps(document, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) > 1 or (args and args[0] in ("-h", "--help")):
        print("usage: python -m backend.openapi [OUT]", file=sys.stderr)
        return 2
    text = openapi_json()
    if args:
        out = Path(args[0])
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text, encoding="utf-8")
    else:
        sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
