"""``python -m circat.workers ...`` is ``circat ...`` (how ``circat serve`` starts its embedded worker)."""

from circat.workers.cli import main

main()
