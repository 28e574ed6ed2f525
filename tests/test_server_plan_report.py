"""The planner and report endpoints are mounted behind the same Bearer auth as the seed endpoints."""

from __future__ import annotations

from server_fixtures import api_token, app, auth_headers, client, isolated_data_dir, sqlite_store  # noqa: F401

import vramplan

BASE = "/api/v1/vram-calculation"
BODY = {"gpu_key": "rtx_4090", "llm_key": "llama-3-8b-instruct", "quantization": "q4_k_m"}


def test_plan_and_report_need_a_token(client):
    for path in (f"{BASE}/plan", f"{BASE}/report?workload=inference&format=html"):
        r = client.post(path, json=BODY)
        assert r.status_code == 401 and r.headers["www-authenticate"].startswith("Bearer")


def test_plan_endpoint_answers_like_the_python_api(client, auth_headers):
    body = {**BODY, "workload": "inference", "find": ["max_seq_length"]}
    r = client.post(f"{BASE}/plan", json=body, headers=auth_headers)
    assert r.status_code == 200, r.text
    assert r.json()["max_seq_length"]["value"] == vramplan.plan(body)["max_seq_length"]["value"]


def test_report_endpoint_renders_html_and_markdown(client, auth_headers):
    r = client.post(f"{BASE}/report?workload=inference&format=html", json=BODY, headers=auth_headers)
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    assert "<svg" in r.text and "weights_gpu_bytes" in r.text
    r = client.post(f"{BASE}/report?workload=inference&format=markdown", json=BODY, headers=auth_headers)
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/markdown")
    r = client.post(f"{BASE}/report?workload=inference&format=html", json={**BODY, "gpu_key": "nope"}, headers=auth_headers)
    assert r.status_code == 422 and "closest" in r.text
