"""Built-in catalogs (GPUs, models, quantization formats, interconnects, runtimes) and the
user's own catalog folder (``vramplan models import --save-as`` writes there)."""

from __future__ import annotations

import os
from importlib import resources
from pathlib import Path

from vramplan.hookspecs import hookimpl


def user_catalog_dir() -> Path:
    """``$VRAMPLAN_CATALOG_DIR`` or the user data folder's ``catalogs/``."""
    env = os.environ.get("VRAMPLAN_CATALOG_DIR")
    if env:
        return Path(env)
    from platformdirs import user_data_dir

    return Path(user_data_dir("vramplan")) / "catalogs"


@hookimpl
def register_catalog_dirs():
    dirs = [Path(str(resources.files("vramplan.catalogs")))]
    user = user_catalog_dir()
    if user.is_dir():
        dirs.append(user)
    return dirs
