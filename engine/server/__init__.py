"""The HTTP face of vramplan: the seed-compatible API, the calculator page, token settings.

``create_app()`` builds the ASGI app; ``vramplan serve`` runs it under uvicorn.
"""

from .app import app_from_env, create_app

__all__ = ["create_app", "app_from_env"]
