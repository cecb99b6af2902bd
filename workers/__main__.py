"""``python -m workers ...`` is ``circat ...`` (how ``circat serve`` starts its embedded worker)."""

from workers.cli import main

main()
