"""The ``circat`` command line."""
