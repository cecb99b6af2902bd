"""Published GPT-2 small circuits (node level), shipped as data with their citations."""

from __future__ import annotations

import json
from importlib import resources
from typing import TYPE_CHECKING

from circat.service.documents import CircuitDocument

if TYPE_CHECKING:
    from circat.service.catalogue import Catalogue

DATA = "gpt2_small.json"


def literature_documents() -> list[CircuitDocument]:
    """The shipped literature circuits as circuit documents (heads ``L.H`` -> ``aL.hH``)."""
    raw = json.loads(resources.files(__package__).joinpath(DATA).read_text())
    docs = []
    for entry in raw["circuits"]:
        heads = [f"a{h.split('.')[0]}.h{h.split('.')[1]}" for h in entry.pop("heads")]
        mlps = [f"m{m}" for m in entry.pop("mlps")]
        nodes = {name: {"in_graph": True} for name in heads + mlps}
        docs.append(CircuitDocument(model=raw["model"], method="literature", nodes=nodes, **entry))
    return docs


def add_literature(cat: Catalogue) -> dict[str, str]:
    """Store the literature circuits in ``cat`` (a no-op for those it holds); their ids by task."""
    return {doc.task: cat.add_document(doc) for doc in literature_documents()}
