"""The REST API: ``create_app`` builds the FastAPI application around a ``Postroom``."""
