"""Shared ending of every benchmark script: print the report and, if asked, write it atomically as JSON."""
from __future__ import annotations

import json


def emit(report: dict, json_path: str | None) -> None:
    print(json.dumps(report, indent=1))
    if json_path:
        from nbseg.io import atomic_write_json

        atomic_write_json(json_path, report)
