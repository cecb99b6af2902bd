"""A catalogue's lifecycle: its records as documents, copies between stores, dumps and restores (docs/lifecycle.md)."""
