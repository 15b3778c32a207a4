"""The panel's local HTTP API (FastAPI), laid out one router per concern under /api/v1."""
