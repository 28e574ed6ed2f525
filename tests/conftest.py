"""Shared fixtures: build throwaway catalogs with extra plugins and always put the real one back."""

from __future__ import annotations

import contextlib
import os
import tempfile

import pytest

# Validated data files are cached by content (vramplan.datacache): keep the suite's cache out of the
# user's cache dir. tests/test_datacache.py points it at folders of its own.
os.environ.setdefault("VRAMPLAN_CACHE_DIR", tempfile.mkdtemp(prefix="vramplan-test-cache-"))

import vramplan
from vramplan.catalog import build_catalog, reset


def trace_of(out: dict) -> dict[str, float]:
    """Formula id → value from a response made with ``"trace": true``."""
    return {step["id"]: step["value"] for step in out["trace"]}


@contextlib.contextmanager
def catalog_with(*plugins, load_entrypoints: bool = False):
    """Install a catalog built with ``plugins`` registered for the duration of the block."""
    cat = build_catalog(load_entrypoints=load_entrypoints, extra_plugins=plugins)
    reset(cat)
    try:
        yield cat
    finally:
        reset()


@pytest.fixture
def with_plugins():
    return catalog_with


@pytest.fixture
def infer():
    def run(**fields):
        body = {"gpu_key": "h100_80", "llm_key": "llama-3-8b-instruct", "trace": True, **fields}
        out = vramplan.estimate_inference(body)
        return out, trace_of(out)

    return run


@pytest.fixture
def train():
    def run(**fields):
        body = {"gpu_key": "h100_80", "llm_key": "llama-3-8b-instruct", "trace": True, **fields}
        out = vramplan.estimate_finetuning(body)
        return out, trace_of(out)

    return run
