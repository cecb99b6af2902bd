"""The REST API (FastAPI). ``create_app`` builds it over any store; nothing here imports torch."""
