"""JSON Schemas of the stream messages and the scan file's metadata, for third parties.

``python -m contracts.schema DIR`` writes one file per message header (``scan-start``, ``frame``,
``scan-end``, ``live-slices``) and per recorded model (``instrument``: the scan file's
``instrument_json``; ``scan-plan``: its ``scan_plan_json``) as ``DIR/<name>.schema.json``;
``--check`` exits 1, naming the stale files, when ``DIR`` differs from what it would write.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from contracts.instrument import Instrument
from contracts.messages import message_schemas
from contracts.scanplan import ScanPlan

#: JSON Schema dialect of the generated files.
DIALECT = "https://json-schema.org/draft/2020-12/schema"


#: Header fields every message must carry (they have defaults in the models, for senders).
ENVELOPE = ("protocol", "version", "type")


def schemas() -> dict[str, dict[str, Any]]:
    """Every published schema by file stem."""
    out = dict(message_schemas())
    for schema in out.values():
        schema["required"] = [*ENVELOPE, *(f for f in schema["required"] if f not in ENVELOPE)]
    out["instrument"] = Instrument.model_json_schema()
    out["scan-plan"] = ScanPlan.model_json_schema()
    return {
        name: {"$schema": DIALECT, "$id": f"{name}.schema.json", **s} for name, s in out.items()
    }


def render(schema: dict[str, Any]) -> str:
    """A schema as the text of its file."""
    return json.dumps(schema, indent=2, sort_keys=True) + "\n"


def stale(directory: Path) -> list[str]:
    """Names of the schema files in ``directory`` that are missing or differ."""
    return [
        f"{name}.schema.json"
        for name, schema in schemas().items()
        if not (directory / f"{name}.schema.json").is_file()
        or (directory / f"{name}.schema.json").read_text() != render(schema)
    ]


def main(argv: list[str] | None = None) -> int:
    """Write (or ``--check``) the schema files."""
    parser = argparse.ArgumentParser(prog="python -m contracts.schema", description=__doc__)
    parser.add_argument("directory", type=Path, help="where the .schema.json files go")
    parser.add_argument("--check", action="store_true", help="exit 1 if any file is stale")
    args = parser.parse_args(argv)
    if args.check:
        bad = stale(args.directory)
        if bad:
            print(f"stale schemas in {args.directory}: {', '.join(bad)}", file=sys.stderr)
            return 1
        return 0
    args.directory.mkdir(parents=True, exist_ok=True)
    for name, schema in schemas().items():
        (args.directory / f"{name}.schema.json").write_text(render(schema))
    return 0


if __name__ == "__main__":
    sys.exit(main())
