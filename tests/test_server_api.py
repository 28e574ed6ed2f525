"""The HTTP API: the seed's endpoints, the auth matrix, the error matrix, OpenAPI and /docs."""

from __future__ import annotations

import json
import logging
import re
import shutil
import subprocess
import sys

import jsonschema
import pytest
import vramplan
from server_fixtures import (  # noqa: F401
    ADMIN_SECRET,
    ORIGIN,
    PREFIX,
    SEED_FINETUNING_REQUEST,
    SEED_INFERENCE_REQUEST,
    api_token,
    app,
    auth_headers,
    client,
    isolated_data_dir,
    live_server,
    sqlite_store,
)
from vramplan.server.openapi import REQUEST_COMPONENTS, SCHEMA_FILES, as_accepted, load_schema

# Every field of the seed's example outputs with the seed's JSON type.
SEED_INFERENCE_FIELDS = {
    "vram_usage": "number", "vram_percentage": "number", "actual_vram_percentage": "number",
    "memory_status": "string", "static_shared_memory": "number", "per_user_memory": "number",
    "estimated_latency_tps": "number", "estimated_throughput_tps": "number", "per_user_tps": "number",
    "ms_per_token": "number", "tftt": "number", "estimated_system_ram_required": "number",
    "offloaded_memory": "number", "estimated_power_draw": "number", "memory_details": "object",
    "memory_breakdown": "array",
}
SEED_FINETUNING_FIELDS = {
    "vram_usage": "number", "vram_percentage": "number", "actual_vram_percentage": "number",
    "memory_status": "string", "static_shared_memory": "number", "training_tps": "number",
    "samples_per_second": "number", "steps_per_second": "number", "total_tokens": "number",
    "total_training_time_hours": "number", "estimated_system_ram_required": "number",
    "offloaded_memory": "number", "estimated_power_draw": "number", "active_optimizations": "array",
    "optimization_preset": "string", "memory_details": "object", "memory_breakdown": "array",
}
MEMORY_STATUSES = {"okay", "moderate", "high", "very_high", "insufficient", "error"}
JSON_TYPES = {"number": (int, float), "string": str, "object": dict, "array": list}

ENDPOINTS = [("POST", "inference", SEED_INFERENCE_REQUEST), ("POST", "finetuning", SEED_FINETUNING_REQUEST),
             ("GET", "gpus", None), ("GET", "llms", None)]


def call(client, method, name, body=None, headers=None):
    return client.request(method, f"{PREFIX}/{name}", json=body, headers=headers or {})


def assert_json_error(resp, status):
    assert resp.status_code == status, resp.text
    assert resp.headers["content-type"].startswith("application/json")
    body = resp.json()
    assert isinstance(body["error"], str) and isinstance(body["message"], str) and body["message"]
    assert isinstance(body["errors"], list)
    return body


def assert_seed_shape(body: dict, fields: dict):
    for name, kind in fields.items():
        assert name in body, f"seed field {name} missing"
        value = body[name]
        assert isinstance(value, JSON_TYPES[kind]) and not isinstance(value, bool), (name, value)
    assert body["memory_status"] in MEMORY_STATUSES
    assert body["memory_details"] and all(isinstance(v, (int, float)) for v in body["memory_details"].values())
    for item in body["memory_breakdown"]:
        assert isinstance(item["label"], str)
        assert isinstance(item["value"], (int, float)) and isinstance(item["size_gb"], (int, float))
    # memory_details itemizes vram_usage and sums to it (rounding aside)
    assert sum(body["memory_details"].values()) == pytest.approx(body["vram_usage"], abs=0.05)


# -- authentication ----------------------------------------------------------------------------

@pytest.mark.parametrize("method,name,body", ENDPOINTS)
def test_no_token_is_401_with_bearer_challenge(client, method, name, body):
    resp = call(client, method, name, body)
    assert_json_error(resp, 401)
    assert resp.headers["www-authenticate"].startswith("Bearer")
    assert "invalid_token" not in resp.headers["www-authenticate"]


@pytest.mark.parametrize("method,name,body", ENDPOINTS)
@pytest.mark.parametrize("header", ["Bearer vp_not-a-real-token", "Bearer ", "Basic dXNlcjpwYXNz", "vp_bare"])
def test_wrong_token_is_401(client, api_token, method, name, body, header):
    resp = call(client, method, name, body, {"Authorization": header})
    assert_json_error(resp, 401)
    assert resp.headers["www-authenticate"].startswith("Bearer")


@pytest.mark.parametrize("method,name,body", ENDPOINTS)
def test_revoked_token_fails_at_once(client, sqlite_store, method, name, body):
    token = sqlite_store.create("soon-gone")
    headers = {"Authorization": f"Bearer {token}"}
    assert call(client, method, name, body, headers).status_code == 200
    sqlite_store.revoke("soon-gone")
    resp = call(client, method, name, body, headers)
    assert_json_error(resp, 401)
    assert 'error="invalid_token"' in resp.headers["www-authenticate"]


def test_healthz_needs_no_token(client):
    resp = client.get("/healthz")
    assert resp.status_code == 200 and resp.json() == {"status": "ok"}


def test_tokens_never_appear_in_logs(client, auth_headers, api_token, caplog, monkeypatch):
    caplog.set_level(logging.DEBUG)
    call(client, "GET", "gpus", headers=auth_headers)
    call(client, "GET", "gpus", headers={"Authorization": "Bearer vp_wrong-secret-value"})
    monkeypatch.setattr(vramplan, "list_gpus", lambda: 1 / 0)
    call(client, "GET", "gpus", headers=auth_headers)
    assert caplog.records, "expected the failure above to be logged"
    assert api_token not in caplog.text and "vp_wrong-secret-value" not in caplog.text


# -- the seed's examples -----------------------------------------------------------------------

def test_seed_inference_example(client, auth_headers):
    resp = call(client, "POST", "inference", SEED_INFERENCE_REQUEST,
                {**auth_headers, "Content-Type": "application/json"})
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert_seed_shape(body, SEED_INFERENCE_FIELDS)
    assert body == vramplan.estimate_inference(dict(SEED_INFERENCE_REQUEST))  # the API is the Python API
    jsonschema.validate(body, load_schema(SCHEMA_FILES["InferenceResponse"]))


def test_seed_finetuning_example(client, auth_headers):
    resp = call(client, "POST", "finetuning", SEED_FINETUNING_REQUEST, auth_headers)
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert_seed_shape(body, SEED_FINETUNING_FIELDS)
    assert all(isinstance(o, str) for o in body["active_optimizations"])
    assert body == vramplan.estimate_finetuning(dict(SEED_FINETUNING_REQUEST))
    jsonschema.validate(body, load_schema(SCHEMA_FILES["FinetuningResponse"]))


def test_seed_gpu_and_llm_lists(client, auth_headers):
    gpus = call(client, "GET", "gpus", headers=auth_headers).json()
    by_key = {g["key"]: g for g in gpus}
    assert by_key["rtx_4090"]["memory"] == 24 and by_key["h100_80"]["memory"] == 80  # GiB
    assert "NVIDIA" in by_key["rtx_4090"]["label"]
    llms = call(client, "GET", "llms", headers=auth_headers).json()
    assert {"llama-3-8b-instruct", "llama-3.1-70b-instruct"} <= {m["key"] for m in llms}
    jsonschema.validate(gpus, load_schema(SCHEMA_FILES["GpuList"]))
    jsonschema.validate(llms, load_schema(SCHEMA_FILES["LlmList"]))


def test_llm_list_filters_by_family_size_capability_and_search(client, auth_headers):
    def keys(query):
        r = client.get(f"{PREFIX}/llms?{query}", headers=auth_headers)
        assert r.status_code == 200, r.text
        jsonschema.validate(r.json(), load_schema(SCHEMA_FILES["LlmList"]))
        return {m["key"] for m in r.json()}

    qwen3_moe = keys("family=QWEN3&capability=moe")
    assert {"qwen3-30b-a3b", "qwen3-235b-a22b"} <= qwen3_moe
    assert all(k.startswith("qwen3") for k in qwen3_moe) and "qwen3-8b" not in qwen3_moe
    small = keys("min_params=0.4&max_params=0.5")  # Qwen2.5 0.5B has 0.494 B
    assert "qwen2.5-0.5b-instruct" in small and "llama-3.1-8b" not in small
    assert keys("capability=moe,mla&search=deepseek") == keys("capability=moe&capability=mla&search=DeepSeek")
    assert "deepseek-v3" in keys("capability=mla") and "llama-3.1-8b" not in keys("capability=mla")
    assert keys("search=coder%2032b") == {"qwen2.5-coder-32b-instruct"}
    assert keys("search=no-such-model") == set()


def test_llm_list_rejects_bad_filters_naming_them(client, auth_headers):
    r = client.get(f"{PREFIX}/llms?min_params=big&capability=telepathy&colour=red", headers=auth_headers)
    assert r.status_code == 422
    fields = {e["field"] for e in r.json()["errors"]}
    assert fields == {"min_params", "capability", "colour"}
    r = client.get(f"{PREFIX}/llms?capability=telepathy&min_params=9&max_params=1", headers=auth_headers)
    assert r.status_code == 422
    assert {e["field"] for e in r.json()["errors"]} == {"capability", "min_params"}


def test_seed_curl_verbatim_body(client, auth_headers):
    """The seed's curl -d payload as text, byte for byte (newlines and all)."""
    raw = '{\n"gpu_key": "rtx_4090",\n"llm_key": "llama-3-8b-instruct",\n"quantization": "q4_k_m",\n' \
          '"batch_size": 1,\n"seq_length": 2048\n}'
    resp = client.post(f"{PREFIX}/inference", content=raw,
                       headers={**auth_headers, "Content-Type": "application/json"})
    assert resp.status_code == 200 and resp.json()["vram_usage"] > 0


# -- the error matrix --------------------------------------------------------------------------

@pytest.mark.parametrize("raw", ['{"gpu_key": "rtx_4090",', "not json", "", '{"a": NaN}', "[" * 5000])
def test_malformed_json_is_400(client, auth_headers, raw):
    resp = client.post(f"{PREFIX}/inference", content=raw,
                       headers={**auth_headers, "Content-Type": "application/json"})
    assert_json_error(resp, 400)


@pytest.mark.parametrize("method,name", [("GET", "inference"), ("PUT", "finetuning"), ("POST", "gpus"),
                                         ("DELETE", "llms")])
def test_wrong_method_is_405(client, auth_headers, method, name):
    resp = client.request(method, f"{PREFIX}/{name}", headers=auth_headers)
    assert_json_error(resp, 405)
    assert resp.headers["allow"]


def test_body_over_64_kib_is_413(client, auth_headers):
    body = json.dumps({**SEED_INFERENCE_REQUEST, "padding": "x" * (64 * 1024)})
    resp = client.post(f"{PREFIX}/inference", content=body,
                       headers={**auth_headers, "Content-Type": "application/json"})
    assert_json_error(resp, 413)


def test_chunked_body_over_64_kib_is_413(client, auth_headers):
    def chunks():
        yield b'{"gpu_key": "'
        for _ in range(70):
            yield b"x" * 1024
        yield b'"}'

    resp = client.post(f"{PREFIX}/inference", content=chunks(),
                       headers={**auth_headers, "Content-Type": "application/json"})
    assert "content-length" not in resp.request.headers
    assert_json_error(resp, 413)


@pytest.mark.parametrize("ctype", ["text/plain", "application/x-www-form-urlencoded", None])
def test_wrong_content_type_is_415(client, auth_headers, ctype):
    headers = dict(auth_headers)
    if ctype:
        headers["Content-Type"] = ctype
    resp = client.post(f"{PREFIX}/finetuning", content=json.dumps(SEED_FINETUNING_REQUEST), headers=headers)
    assert_json_error(resp, 415)


def test_content_type_with_charset_is_fine(client, auth_headers):
    resp = client.post(f"{PREFIX}/inference", content=json.dumps(SEED_INFERENCE_REQUEST),
                       headers={**auth_headers, "Content-Type": "application/json; charset=utf-8"})
    assert resp.status_code == 200


@pytest.mark.parametrize("endpoint,field,bad,expected", [
    ("inference", "gpu_key", "rtx_409", "rtx_4090"),
    ("inference", "llm_key", "llama-3-8b-instuct", "llama-3-8b-instruct"),
    ("inference", "quantization", "q4_k_n", "q4_k_m"),
    ("finetuning", "gpu_key", "h100-80", "h100_80"),
])
def test_unknown_key_is_422_with_closest_keys(client, auth_headers, endpoint, field, bad, expected):
    base = SEED_INFERENCE_REQUEST if endpoint == "inference" else SEED_FINETUNING_REQUEST
    resp = call(client, "POST", endpoint, {**base, field: bad}, auth_headers)
    body = assert_json_error(resp, 422)
    [problem] = [e for e in body["errors"] if e["field"].endswith(field)]
    assert expected in problem["closest"]
    assert bad in problem["message"] or bad in body["message"]


def test_schema_violations_are_422_listing_every_bad_field(client, auth_headers):
    bad = {**SEED_INFERENCE_REQUEST, "batch_size": "four", "seq_length": -1, "enable_prefix_caching": "yes"}
    body = assert_json_error(call(client, "POST", "inference", bad, auth_headers), 422)
    fields = {re.sub(r"^\$\.?", "", e["field"]) for e in body["errors"]}
    assert {"batch_size", "seq_length", "enable_prefix_caching"} <= fields
    assert all(e["message"] for e in body["errors"])


def test_missing_required_field_is_422(client, auth_headers):
    body = assert_json_error(call(client, "POST", "finetuning", {"gpu_key": "rtx_4090"}, auth_headers), 422)
    assert "llm_key" in json.dumps(body)


@pytest.mark.parametrize("payload", [[], "text", 3, None])
def test_body_that_is_not_an_object_is_422(client, auth_headers, payload):
    resp = client.post(f"{PREFIX}/inference", content=json.dumps(payload),
                       headers={**auth_headers, "Content-Type": "application/json"})
    assert_json_error(resp, 422)


def test_unexpected_engine_failure_is_json_not_an_html_page(client, auth_headers, monkeypatch):
    def boom(body):
        raise RuntimeError("kaboom")

    monkeypatch.setattr(vramplan, "estimate_inference", boom)
    resp = call(client, "POST", "inference", SEED_INFERENCE_REQUEST, auth_headers)
    body = assert_json_error(resp, 500)
    assert "incident" in body["message"] and "kaboom" not in body["message"]


def test_unknown_path_is_json_404(client):
    assert_json_error(client.get("/api/v1/vram-calculation/nothing"), 404)


# -- the calculator page's session -------------------------------------------------------------

PAGE = {"X-Vramplan-Page": "1", "Origin": ORIGIN, "Sec-Fetch-Site": "same-origin"}


def test_page_session_calls_the_api_without_a_token(client):
    page = client.get("/")
    assert page.status_code == 200
    cookie = page.headers["set-cookie"]
    assert "vramplan_page=" in cookie and "HttpOnly" in cookie and "samesite=strict" in cookie.lower()
    assert "Path=/api/v1/vram-calculation/" in cookie
    assert call(client, "GET", "gpus", headers=PAGE).status_code == 200
    assert call(client, "POST", "inference", SEED_INFERENCE_REQUEST, PAGE).status_code == 200


def test_page_session_needs_the_custom_header(client):
    client.get("/")
    assert_json_error(call(client, "GET", "gpus", headers={"Origin": ORIGIN}), 401)


@pytest.mark.parametrize("headers", [{"Origin": "https://evil.example"}, {"Sec-Fetch-Site": "cross-site"},
                                     {"Origin": "null", "Sec-Fetch-Site": "cross-site"}])
def test_page_session_refused_cross_origin(client, headers):
    client.get("/")
    resp = call(client, "POST", "inference", SEED_INFERENCE_REQUEST, {"X-Vramplan-Page": "1", **headers})
    assert_json_error(resp, 403)


def test_tampered_page_cookie_is_401(client):
    client.get("/")
    value = client.cookies.get("vramplan_page")
    client.cookies.clear()
    client.cookies.set("vramplan_page", value[:-2] + ("AA" if not value.endswith("AA") else "BB"))
    assert_json_error(call(client, "GET", "gpus", headers=PAGE), 401)


def test_page_session_is_rate_limited(client, app):
    from vramplan.server.auth import RateLimiter

    app.state.page_limiter = RateLimiter(3, 60)
    client.get("/")
    assert [call(client, "GET", "llms", headers=PAGE).status_code for _ in range(4)] == [200, 200, 200, 429]


def test_the_calculator_is_built_once_per_catalog(client, with_plugins):
    """GET / reuses the form built for the loaded catalog; a new catalog (a plugin's GPU) builds it again."""
    from test_plugins import GpuPlugin
    from vramplan.server import pages

    def gpus_shown() -> int:
        return int(re.search(r"<strong>(\d+)</strong> GPUs", client.get("/").text).group(1))

    with with_plugins():  # the built-in plugins only
        plain = gpus_shown()
        built = pages._built
        assert gpus_shown() == plain and pages._built is built  # the second GET builds nothing
    with with_plugins(GpuPlugin()):
        assert gpus_shown() == plain + 1  # test_gpu_32, from the plugin (not a custom entry)
        assert pages._built is not built


# -- headers, OpenAPI, docs --------------------------------------------------------------------

@pytest.mark.parametrize("path", ["/", "/docs", "/settings", "/healthz", f"{PREFIX}/gpus"])
def test_security_headers(client, path):
    resp = client.get(path)
    assert resp.headers["x-content-type-options"] == "nosniff"
    assert resp.headers["x-frame-options"] == "DENY"
    assert resp.headers["referrer-policy"] == "same-origin"
    csp = resp.headers["content-security-policy"]
    assert "frame-ancestors 'none'" in csp and "default-src 'none'" in csp
    assert "unsafe-inline" not in csp and "unsafe-eval" not in csp


def _refs(node):
    if isinstance(node, dict):
        if isinstance(node.get("$ref"), str):
            yield node["$ref"]
        for value in node.values():
            yield from _refs(value)
    elif isinstance(node, list):
        for value in node:
            yield from _refs(value)


def test_openapi_document(client):
    resp = client.get("/openapi.json")
    assert resp.headers["content-type"] == "application/json"
    doc = resp.json()
    assert re.fullmatch(r"3\.1\.\d+", doc["openapi"])
    assert doc["info"]["title"] and doc["info"]["version"]
    assert "GiB (2^30 bytes)" in doc["info"]["description"]
    assert doc["components"]["securitySchemes"]["bearerAuth"] == {**doc["components"]["securitySchemes"]["bearerAuth"],
                                                                  "type": "http", "scheme": "bearer"}
    expected = {f"{PREFIX}/inference": "post", f"{PREFIX}/finetuning": "post", f"{PREFIX}/gpus": "get",
                f"{PREFIX}/llms": "get", "/healthz": "get"}
    assert set(expected) <= set(doc["paths"])
    for path, method in expected.items():
        op = doc["paths"][path][method]
        assert op["operationId"] and op["responses"]["200"]
        assert all(re.fullmatch(r"[1-5]\d\d", code) for code in op["responses"])
    assert doc["paths"]["/healthz"]["get"]["security"] == []
    # the schemas in schemas/ are the components, unchanged except that requests accept, by default,
    # unknown fields and null for optional ones (strict mode enforces the files as they are); the
    # operations reference them
    for name, filename in SCHEMA_FILES.items():
        wire = as_accepted(load_schema(filename)) if name in REQUEST_COMPONENTS else load_schema(filename)
        assert doc["components"]["schemas"][name] == wire
    assert "additionalProperties" not in doc["components"]["schemas"]["InferenceRequest"]
    assert doc["components"]["schemas"]["InferenceRequest"]["properties"]["batch_size"]["type"] == ["integer", "null"]
    assert doc["components"]["schemas"]["InferenceRequest"]["properties"]["gpu_key"]["type"] == "string"  # required
    inference = doc["paths"][f"{PREFIX}/inference"]["post"]
    assert inference["requestBody"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/InferenceRequest"}
    assert inference["responses"]["200"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/InferenceResponse"}
    for code in ("400", "401", "413", "415", "422"):
        assert code in inference["responses"]
    # every local $ref resolves; every component is a valid JSON Schema 2020-12
    for ref in _refs({k: v for k, v in doc.items() if k != "components"}):
        target = doc
        for part in ref.removeprefix("#/").split("/"):
            target = target[part]
    for schema in doc["components"]["schemas"].values():
        jsonschema.Draft202012Validator.check_schema(schema)
    # the documented example requests are valid against their schemas
    jsonschema.validate(inference["requestBody"]["content"]["application/json"]["example"],
                        doc["components"]["schemas"]["InferenceRequest"])


def test_docs_page_is_local_and_explains_units(client):
    resp = client.get("/docs")
    assert resp.status_code == 200 and resp.headers["content-type"].startswith("text/html")
    html = resp.text
    for needle in ("gpu_key", "llm_key", "memory_status", "GiB", "2^30", "Authorization: Bearer",
                   f"{PREFIX}/finetuning", "422"):
        assert needle in html
    assert not re.search(r'(src|href)="(https?:)?//', html), "no external resources"


def test_calculator_page_is_self_contained(client):
    html = client.get("/").text
    assert 'id="calc-form"' in html and 'id="memory-chart"' in html
    assert not re.search(r'(src|href)="(https?:)?//', html)
    assert "<script>" not in html and " style=" not in html  # nothing inline: the CSP forbids it
    # the pickers preselect the schemas' defaults
    assert '<option value="fp16" selected>' in html and '<option value="lora" selected>' in html
    # every control carries its request field and the schema's default, and starts there
    assert re.search(r'id="seq_length" data-field="seq_length" data-type="integer" data-default="2048"[^>]*value="2048"', html)
    assert re.search(r'id="gradient_checkpointing" data-field="optimization_config.gradient_checkpointing" '
                     r'data-type="boolean"\s+data-default="true" checked', html)
    for asset in ("/static/calculator.js", "/static/charts.js", "/static/style.css"):
        assert asset in html
        resp = client.get(asset)
        assert resp.status_code == 200 and len(resp.content) > 500


# -- end to end: `vramplan serve`, `tokens create`, and the seed's curl commands verbatim -------

SEED_CURLS = {
    "inference": '''curl -X POST https://apxml.com/api/v1/vram-calculation/inference \\
-H "Authorization: Bearer YOUR_API_KEY_HERE" \\
-H "Content-Type: application/json" \\
-d '{
"gpu_key": "rtx_4090",
"llm_key": "llama-3-8b-instruct",
"quantization": "q4_k_m",
"batch_size": 1,
"seq_length": 2048
}\'''',
    "finetuning": '''curl -X POST https://apxml.com/api/v1/vram-calculation/finetuning \\
-H "Authorization: Bearer YOUR_API_KEY_HERE" \\
-H "Content-Type: application/json" \\
-d '{
"gpu_key": "rtx_4090",
"llm_key": "llama-3-8b-instruct",
"finetuning_method": "lora",
"lora_rank": 16,
"batch_size": 4,
"seq_length": 2048
}\'''',
    "gpus": '''curl https://apxml.com/api/v1/vram-calculation/gpus \\
-H "Authorization: Bearer YOUR_API_KEY_HERE"''',
    "llms": '''curl https://apxml.com/api/v1/vram-calculation/llms \\
-H "Authorization: Bearer YOUR_API_KEY_HERE"''',
}


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl not installed")
def test_seed_curl_examples_verbatim_against_vramplan_serve(live_server):
    base, env = live_server
    created = subprocess.run([sys.executable, "-m", "vramplan.server", "tokens", "create", "--name", "seed"],
                             env=env, capture_output=True, text=True, check=True)
    token = created.stdout.strip()
    assert created.stdout == token + "\n"
    for name, command in SEED_CURLS.items():
        command = command.replace("https://apxml.com", base).replace("YOUR_API_KEY_HERE", token)
        out = subprocess.run(["bash", "-c", command + " -sS -w '\\n%{http_code}'"], capture_output=True,
                             text=True, timeout=30)
        body, _, status = out.stdout.rpartition("\n")
        assert status == "200", (name, out.stdout, out.stderr)
        data = json.loads(body)
        if name == "inference":
            assert_seed_shape(data, SEED_INFERENCE_FIELDS)
        elif name == "finetuning":
            assert_seed_shape(data, SEED_FINETUNING_FIELDS)
        else:
            assert isinstance(data, list) and data and "key" in data[0]
    # the same command without the token is refused
    out = subprocess.run(["curl", "-sS", "-o", "/dev/null", "-w", "%{http_code}", f"{base}{PREFIX}/gpus"],
                         capture_output=True, text=True, timeout=30)
    assert out.stdout == "401"


def test_token_store_outage_is_503_json_without_the_token(client, app, auth_headers, api_token, caplog):
    def down(token, **_):
        raise OSError(f"database is down while checking {token}")

    app.state.store.verify = down
    resp = call(client, "GET", "gpus", headers=auth_headers)
    assert_json_error(resp, 503)
    assert "database is down" in caplog.text and api_token not in caplog.text


def test_page_sessions_can_be_switched_off(sqlite_store, api_token, monkeypatch):
    """VRAMPLAN_PAGE_SESSIONS=0: no page cookie, the cookie is not accepted, the page asks for a token."""
    from server_fixtures import test_client
    from vramplan.server import create_app

    monkeypatch.setenv("VRAMPLAN_PAGE_SESSIONS", "0")
    app = create_app(store=sqlite_store, admin_secret=ADMIN_SECRET)
    on = create_app(store=sqlite_store, admin_secret=ADMIN_SECRET, page_sessions=True)
    with test_client(on) as c:
        c.get("/")
        cookie = c.cookies.get("vramplan_page")
    with test_client(app) as c:
        page = c.get("/")
        assert "set-cookie" not in page.headers and 'id="api_token"' in page.text
        c.cookies.set("vramplan_page", cookie, path=f"{PREFIX}/")
        assert_json_error(call(c, "GET", "gpus", headers=PAGE), 401)
        assert call(c, "GET", "gpus", headers={"Authorization": f"Bearer {api_token}"}).status_code == 200
