"""Circuit Catalogue service: circuit types, validation, stores, overlap algebra, API and CLI.

Light by design: nothing under ``service`` imports torch.
"""

__version__ = "0.1.0"
