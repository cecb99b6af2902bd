"""Write the JSON Schemas of the exchange formats into ``schema/`` (run after changing them)."""

from __future__ import annotations

import json

from pydantic import BaseModel

from circat.service.documents import CircuitDocument, MibDocument
from circat.service.schema_files import schema_dir

SCHEMAS: dict[str, type[BaseModel]] = {
    "circuit.schema.json": CircuitDocument,
    "mib-graph.schema.json": MibDocument,
}


def main() -> None:
    for name, model in SCHEMAS.items():
        (schema_dir() / name).write_text(json.dumps(model.model_json_schema(), indent=2) + "\n")
        print(f"wrote schema/{name}")


if __name__ == "__main__":
    main()
