"""The HTTP API fuzzed against its own OpenAPI document with schemathesis, in process (ASGI).

For every operation in ``/openapi.json``, schemathesis generates schema-valid and schema-invalid
requests (bodies, query parameters, headers, methods) and checks each answer:

- ``not_a_server_error``: no 5xx, whatever comes in;
- ``response_schema_conformance``: every answer — 200s and every error — matches its documented schema;
- ``status_code_conformance`` / ``content_type_conformance`` / ``response_headers_conformance``:
  only documented status codes and media types;
- ``negative_data_rejection``: a schema-invalid request is refused (4xx), never half-served;
- ``ignored_auth``, ``unsupported_method``, ``missing_required_header``, ... (the rest of the defaults).

Left out: ``positive_data_acceptance`` — a schema-valid body may still name a GPU, model, runtime or
interconnect that is not in the catalog, or combine fields that exclude each other; those are 422
by design, and JSON Schema cannot list catalog keys that plugins add at run time.

CI budget: ``VRAMPLAN_FUZZ_MAX_EXAMPLES`` examples per operation (default 25; about 10-20 s for all
seven operations on 2 cores). ``python benchmarks/fuzz_api.py --max-examples 1000`` is the long run.
"""

from __future__ import annotations

import os
import tempfile

import pytest

schemathesis = pytest.importorskip("schemathesis", reason="schemathesis not installed (pip install -e '.[test]')")

from hypothesis import HealthCheck, settings  # noqa: E402
from schemathesis.specs.openapi.checks import positive_data_acceptance  # noqa: E402
from server_fixtures import ADMIN_SECRET, test_client  # noqa: E402
from vramplan.server import auth, create_app  # noqa: E402
from vramplan.server.openapi import openapi_document  # noqa: E402
from vramplan.server.tokens import SQLiteTokenStore  # noqa: E402

MAX_EXAMPLES = int(os.environ.get("VRAMPLAN_FUZZ_MAX_EXAMPLES", "25"))

# One app for the whole module (schemathesis reads the operations at collection time), with its own
# throwaway token store; it never touches the user data dir (store and secret are given).
_TMP = tempfile.TemporaryDirectory(prefix="vramplan-fuzz-")
_STORE = SQLiteTokenStore(os.path.join(_TMP.name, "tokens.db"))
TOKEN = _STORE.create("fuzz")
APP = create_app(store=_STORE, admin_secret=ADMIN_SECRET, page_sessions=False)
# ignored_auth sends wrong tokens on purpose: let the fuzzer go on past the brute-force limit
# (tests/test_hardening_server.py proves the limit itself).
APP.state.token_fail_limiter = auth.RateLimiter(10**9, 60)

schema = schemathesis.openapi.from_asgi("/openapi.json", APP)


def test_the_fuzzed_document_is_the_builder_output():
    with test_client(APP) as c:
        assert c.get("/openapi.json").json() == openapi_document()
    assert {op.ok().label for op in schema.get_all_operations()} >= {
        "POST /api/v1/vram-calculation/inference", "POST /api/v1/vram-calculation/finetuning",
        "GET /api/v1/vram-calculation/gpus", "GET /api/v1/vram-calculation/llms",
        "POST /api/v1/vram-calculation/plan", "POST /api/v1/vram-calculation/report", "GET /healthz"}


def filter_query(ctx, query):
    """Drop generated queries holding a parameter whose value has no form on the wire: an empty list or object
    (schemathesis' negative data for ``additionalProperties: false`` includes ``{"": []}``) serializes to no
    ``name=value`` pair at all, so the request the server gets is the valid one and its 200 is right - the
    check would flag a violation the server never saw."""
    return not any(isinstance(v, (list, dict)) and not v for v in (query or {}).values())


@schema.hooks.apply(filter_query)
@schema.parametrize()
@settings(max_examples=MAX_EXAMPLES, deadline=None, derandomize=True,  # CI: the same examples every run;
          # benchmarks/fuzz_api.py explores randomly with more examples
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much, HealthCheck.data_too_large])
def test_api_keeps_its_openapi_promises(case):
    case.call_and_validate(headers={"Authorization": f"Bearer {TOKEN}"}, excluded_checks=[positive_data_acceptance])
