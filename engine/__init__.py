"""vramplan: will this LLM workload fit on that GPU, and how fast will it run?

The Python face of the engine. Each function takes and returns exactly what the HTTP API does::

    import vramplan
    vramplan.estimate_inference({"gpu_key": "rtx_4090", "llm_key": "llama-3-8b-instruct", "quantization": "q4_k_m"})

Bad input raises :class:`VramplanError` (a :class:`RequestError` for requests) whose message names
every bad field.
"""

from __future__ import annotations

from typing import Any

from .errors import CatalogError, FormulaError, PluginError, RequestError, VramplanError
from .hookspecs import hookimpl
from .version import __version__

__all__ = [
    "__version__", "estimate_inference", "estimate_finetuning", "list_gpus", "list_models", "list_runtimes", "plan",
    "fit_map", "context_curve",
    "hookimpl", "VramplanError", "RequestError", "CatalogError", "FormulaError", "PluginError",
]


def estimate_inference(request: dict[str, Any], *, strict: bool = False, suggestions: bool = True) -> dict[str, Any]:
    """POST /inference: memory and speed of serving a model, with ``suggestions`` when it does not fit.

    Fields the API does not know are ignored with a warning (``warnings``); ``strict=True`` refuses them.
    ``suggestions=False`` skips the search for them (the HTTP layer runs it off its event loop).
    """
    from .answer import estimate as run
    from .suggest import estimate

    return estimate(request, "inference", strict=strict) if suggestions else run(request, "inference", strict=strict)


def estimate_finetuning(request: dict[str, Any], *, strict: bool = False, suggestions: bool = True) -> dict[str, Any]:
    """POST /finetuning: memory and speed of fine-tuning a model (``strict`` and ``suggestions`` as for
    :func:`estimate_inference`)."""
    from .answer import estimate as run
    from .suggest import estimate

    return estimate(request, "finetuning", strict=strict) if suggestions else run(request, "finetuning", strict=strict)


def list_gpus() -> list[dict[str, Any]]:
    """GET /gpus: every GPU with the seed's key/label/memory plus its specifications."""
    from .listing import gpus

    return gpus()


def list_models(**filters: Any) -> list[dict[str, Any]]:
    """GET /llms: every model with the seed's key/name plus size, family and capabilities.

    Optional filters, as GET /llms takes them: ``family`` (prefix, any case), ``min_params`` /
    ``max_params`` (billions, total), ``capability`` (one or a list, all required: instruct, moe,
    vision, sliding_window, mla, reasoning, code, tools), ``search`` (words in key, name, family or
    Hub repository). A bad filter raises :class:`RequestError` naming it.
    """
    from .listing import models

    return models(**filters)


def list_runtimes() -> list[dict[str, Any]]:
    """GET /runtimes: every runtime profile (serving / training stack) with its cited constants."""
    from .listing import runtimes

    return runtimes()


def plan(request: dict[str, Any], *, strict: bool = False) -> dict[str, Any]:
    """Answer "what fits?" questions (max context, batch, users, fewest GPUs, best quantization, GPUs).

    ``strict``: refuse fields the request schema does not know instead of ignoring them with a warning.
    """
    from .planner import plan as _plan

    return _plan(request, strict=strict)


def fit_map(request: dict[str, Any]) -> dict[str, Any]:
    """POST fit-map: one model on every GPU x every weight format (fine-tuning: method), each cell an estimate."""
    from .maps import fit_map as _fit_map

    return _fit_map(request)


def context_curve(request: dict[str, Any]) -> dict[str, Any]:
    """POST context-curve: memory against context length for one request, and the longest context that fits."""
    from .maps import context_curve as _context_curve

    return _context_curve(request)
