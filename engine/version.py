"""The package's version, in a module of its own: the core reads it (data cache keys, plugin
provenance, reports) without importing the Python face in ``vramplan/__init__.py``, which imports
the core."""

__version__ = "0.1.0"
