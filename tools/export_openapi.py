"""Writes the OpenAPI document the query Lambda's resolver generates to
functions/query/openapi.json (committed; a test checks it matches the routes).

    .venv/bin/python tools/export_openapi.py
"""

from pathlib import Path

from ragline.api.http import build_resolver, openapi_json

OUT = Path(__file__).resolve().parents[1] / "functions" / "query" / "openapi.json"


def generate() -> str:
    app = build_resolver(lambda: None, lambda: None)
    return openapi_json(app) + "\n"


if __name__ == "__main__":
    OUT.write_text(generate())
    print(f"wrote {OUT}")
