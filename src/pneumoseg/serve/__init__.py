"""Web viewer: ``pneumoseg serve`` (needs the ``serve`` extra: fastapi, uvicorn, python-multipart)."""
