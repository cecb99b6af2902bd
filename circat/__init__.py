"""Circuit Catalogue from Python: open a catalogue, list, show and compare circuits, discover new ones.

>>> import circat
>>> cat = circat.open()                       # CIRCAT_STORE_URL, else the embedded SQLite catalogue
>>> rows = cat.list(model="toy", task="ioi")  # rows.to_pandas() with pandas installed
>>> cat.get(rows[0].id)                       # a circuit; Jupyter draws its diagram
>>> cat.overlap(a, b)                         # tables and heatmaps display inline
>>> circat.discover(model="toy", task="ioi", method="eap")

Importing ``circat`` does not import torch: discovery and models load it when they run. The installed
package holds the repository's ``service/`` and ``workers/`` folders as ``circat.service`` and
``circat.workers``; in a source checkout they sit beside this folder and are found there.
"""

from __future__ import annotations

from pathlib import Path

_here = Path(__file__).resolve().parent
if not (_here / "service").is_dir() and (_here.parent / "service" / "__init__.py").is_file():
    __path__.append(str(_here.parent))  # a source checkout: service/ and workers/ sit beside circat/

from circat.catalogue import Catalogue, open  # noqa: E402
from circat.run import Job, discover, load_model, submit, tasks  # noqa: E402
from circat.views import CircuitView, Rows  # noqa: E402

__all__ = ["Catalogue", "CircuitView", "Job", "Rows", "discover", "load_model", "open", "submit", "tasks"]
