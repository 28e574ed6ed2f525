"""Reports: snapshots of the templates, content checks against the live engine, overrides, a browser.

Snapshots render a **frozen context** (``tests/snapshots/report-context-*.json``: a real context,
trimmed to a few formulas and with versions normalised), so they test the templates and charts and
do not move when the estimator is recalibrated. Regenerate context and snapshots with::

    UPDATE_SNAPSHOTS=1 pytest tests/test_reports.py

The content checks use the live engine: every formula in the trace, every source URL, well-formed SVG.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import shutil
import tempfile
import xml.etree.ElementTree as ET
from pathlib import Path

import jinja2
import pytest
from click.testing import CliRunner
from conftest import catalog_with

import vramplan
from vramplan import report
from vramplan.catalog import get_catalog

SNAPSHOTS = Path(__file__).parent / "snapshots"
UPDATE = os.environ.get("UPDATE_SNAPSHOTS") == "1"
VERSION = re.compile(r"\b\d+\.\d+\.\d+(?:[.+-][0-9A-Za-z.]+)?\b")

REQUESTS = {
    "inference": {"gpu_key": "rtx_4090", "llm_key": "llama-3.1-8b-instruct", "quantization": "q4_k_m",
                  "seq_length": 8192, "batch_size": 2},
    "finetuning": {"gpu_key": "h100_80", "llm_key": "llama-3-8b-instruct", "finetuning_method": "qlora",
                   "batch_size": 4, "seq_length": 1024, "num_gpus": 2},
}
KEEP_FORMULAS = 8


def normalise(text: str) -> str:
    return VERSION.sub("<version>", text)


def estimate(workload: str, body: dict) -> dict:
    fn = vramplan.estimate_inference if workload == "inference" else vramplan.estimate_finetuning
    return fn({**body, "trace": True})


def freeze(workload: str) -> dict:
    """A real context, trimmed (a few formulas, the inputs they read) and with versions normalised."""
    body = REQUESTS[workload]
    ctx = report.report_context(body, workload)
    ctx["formulas"] = ctx["formulas"][:KEEP_FORMULAS]
    used = {i["name"] for f in ctx["formulas"] for i in f["inputs"]}
    ctx["scenario"] = [s for s in ctx["scenario"] if s["name"] in used]
    ctx["runtime_constants"] = [c for c in ctx["runtime_constants"] if c["name"] in used]
    ctx["version"] = "0.0.0"
    for p in ctx["plugins"]:
        p["version"] = "0.0.0"
    return ctx


@pytest.fixture
def builtin_templates_only(monkeypatch):
    monkeypatch.delenv("VRAMPLAN_TEMPLATE_DIR", raising=False)
    with catalog_with() as cat:  # no entry-point plugins: only the built-in templates
        yield cat


@pytest.mark.parametrize("workload", ["inference", "finetuning"])
@pytest.mark.parametrize("fmt,ext", [("markdown", "md"), ("html", "html")])
def test_snapshot(workload, fmt, ext, builtin_templates_only):
    ctx_path = SNAPSHOTS / f"report-context-{workload}.json"
    snap_path = SNAPSHOTS / f"report-{workload}.{ext}"
    if UPDATE:
        SNAPSHOTS.mkdir(exist_ok=True)
        if not ctx_path.exists() or fmt == "markdown":  # one fresh context per workload per run
            ctx_path.write_text(json.dumps(freeze(workload), indent=1, ensure_ascii=False) + "\n", "utf-8")
    assert ctx_path.exists(), f"{ctx_path.name} missing: run UPDATE_SNAPSHOTS=1 pytest {__file__}"
    ctx = json.loads(ctx_path.read_text("utf-8"))
    text = normalise(report.render_context(ctx, fmt))
    if UPDATE:
        snap_path.write_text(text, "utf-8")
    assert snap_path.exists(), f"{snap_path.name} missing: run UPDATE_SNAPSHOTS=1 pytest {__file__}"
    expected = normalise(snap_path.read_text("utf-8"))
    assert text == expected, f"{snap_path.name} differs; if the change is intended, run UPDATE_SNAPSHOTS=1 pytest {__file__}"


def test_snapshot_context_still_has_the_shape_templates_need(builtin_templates_only):
    """A frozen context with a key the live one lacks (or the other way round) means: regenerate."""
    for workload in REQUESTS:
        frozen = json.loads((SNAPSHOTS / f"report-context-{workload}.json").read_text("utf-8"))
        live = freeze(workload)
        assert sorted(frozen) == sorted(live), f"regenerate with UPDATE_SNAPSHOTS=1 ({workload})"


# -- content, from the live engine --------------------------------------------------------------

def svgs(text: str) -> list[ET.Element]:
    blocks = re.findall(r"<svg\b.*?</svg>", text, re.S)
    return [ET.fromstring(b) for b in blocks]


@pytest.fixture(scope="module")
def live():
    out = {}
    for workload, body in REQUESTS.items():
        response = estimate(workload, body)
        for fmt in ("markdown", "html"):
            out[workload, fmt] = (response, report.render_report(body, workload, fmt))
    return out


#: Formulas of the other workload that the shared graph evaluates but whose values no figure uses.
NOT_THIS_WORKLOAD = {
    "inference": ("lora_params", "trainable_params", "train_tokens", "optimizer_states_total_bytes", "grads_bytes",
                  "train_activation_bytes"),
    "finetuning": ("kv_bytes_per_token_layer", "decode_kv_read_bytes", "prefill_tokens", "kv_pool_bytes",
                   "attn_transient_bytes"),
}
#: Formulas every estimate of that workload needs for the figures it reports.
THIS_WORKLOAD = {
    "inference": ("kv_bytes_per_token_layer", "kv_cache_gpu_bytes", "weights_gpu_bytes", "ms_per_token", "tftt_ms"),
    "finetuning": ("trainable_params", "lora_params", "train_activation_bytes", "training_tps"),
}


def shown(text: str, step: dict) -> bool:
    return f"{step['id']} = {step['expr']}" in text.replace("&lt;", "<").replace("&gt;", ">").replace("&#39;", "'")


@pytest.mark.parametrize("workload", ["inference", "finetuning"])
@pytest.mark.parametrize("fmt", ["markdown", "html"])
def test_the_formulas_that_produced_the_numbers_are_shown_with_their_inputs(live, workload, fmt):
    response, text = live[workload, fmt]
    steps = {s["id"]: s for s in response["trace"]}
    assert len(steps) > 20
    for fid in THIS_WORKLOAD[workload]:
        assert shown(text, steps[fid]), fid
    for fid in NOT_THIS_WORKLOAD[workload]:
        assert fid in steps and not shown(text, steps[fid]), fid  # evaluated, but not part of this estimate
    # one step whose arithmetic the reader can redo: its inputs and result appear as numbers
    step = steps["kv_bytes_per_token_layer" if workload == "inference" else "lora_params"]
    assert report.exact(step["value"]) in text
    for name, value in step["inputs"].items():
        assert f"{name}</code> = {report.exact(value)}" in text or f"`{name}` = {report.exact(value)}" in text \
            or f"{name}</code></a> = {report.exact(value)}" in text


def test_a_constant_the_request_sets_says_so_beside_the_profiles_source():
    body = {"gpu_key": "h100_80", "llm_key": "llama-3.1-8b", "runtime": "vllm", "runtime_settings": {"gpu_memory_utilization": 0.8}}
    md = report.render_report(body, "inference", "markdown")
    row = next(line for line in md.splitlines() if line.startswith("| `rt_gpu_memory_utilization`"))
    assert "| 0.8 |" in row and "set by the request (runtime_settings.gpu_memory_utilization); the profile's: " in row
    plain = report.render_report({k: v for k, v in body.items() if k != "runtime_settings"}, "inference", "markdown")
    row = next(line for line in plain.splitlines() if line.startswith("| `rt_gpu_memory_utilization`"))
    assert "| 0.9 |" in row and "set by the request" not in row


def test_an_efficiency_the_request_sets_says_so_in_the_scenario_table():
    """The per-class efficiencies reach formulas as eff_* scenario variables: the one the request set for this GPU is
    shown at its value and says which setting made it (an MI300X's decode_bw_eff_amd, vLLM's 0.75, set to 0.6)."""
    body = {"gpu_key": "mi300x", "llm_key": "llama-3.1-8b", "runtime": "vllm", "input_tokens": 512, "output_tokens": 128,
            "runtime_settings": {"decode_bw_eff_amd": 0.6}}
    md = report.render_report(body, "inference", "markdown")
    row = next(line for line in md.splitlines() if line.startswith("| `eff_decode_bw`"))
    assert "| 0.6 |" in row and row.rstrip(" |").endswith("set by the request (runtime_settings.decode_bw_eff_amd)")
    plain = report.render_report({k: v for k, v in body.items() if k != "runtime_settings"}, "inference", "markdown")
    row = next(line for line in plain.splitlines() if line.startswith("| `eff_decode_bw`"))
    assert "| 0.75 |" in row and "set by the request" not in row


def test_markdown_report_has_no_raw_svg_and_spaced_headings():
    body = {"gpu_key": "rtx_4090", "llm_key": "llama-3-70b-instruct", "quantization": "q4_k_m", "num_gpus": 2}
    text = report.render_report(body, "inference", "markdown")
    assert "<svg" not in text
    # pipeline parallelism over 2 GPUs: a per-GPU table under its own heading, a blank line from the one above
    assert "\n\n### Per GPU\n\n| GPU | Layers | GiB |" in text


def test_reports_show_suggestions_when_it_does_not_fit():
    # Llama 3 8B in fp16 is ~15 GiB of weights: it cannot fit an 8 GiB RTX 4060
    body = {"gpu_key": "rtx_4060", "llm_key": "llama-3-8b-instruct"}
    out = vramplan.estimate_inference(body)
    assert out["memory_status"] == "insufficient" and out["suggestions"]
    md = report.render_report(body, "inference", "markdown")
    html = report.render_report(body, "inference", "html")
    first = out["suggestions"][0]
    assert "### What would make it fit" in md and "<h3>What would make it fit</h3>" in html
    assert json.dumps(first["change"]) in md
    assert json.dumps(first["change"]).replace('"', "&#34;") in html


def test_reports_show_the_serving_figures_and_a_load_that_does_not_all_run():
    # an open loop past capacity: its latencies are null; the verdict says so with the sustainable rate
    body = {"gpu_key": "h100_80", "llm_key": "gpt-oss-120b", "quantization": "mxfp4", "runtime": "vllm",
            "input_tokens": 2000, "output_tokens": 200, "request_rate": 50}
    srv = vramplan.estimate_inference(body)["serving"]
    assert srv["ttft_ms"] is None and srv["requests_per_second"] < 50
    md = report.render_report(body, "inference", "markdown")
    html = report.render_report(body, "inference", "html")
    rate = f"{srv['requests_per_second']:.3g} requests/s"
    assert "**The load:** past capacity" in md and rate in md.split("## Request")[0]
    assert "<strong>The load:</strong> past capacity" in html and rate in html
    assert "### Serving" in md and "An open loop of 50 requests/s arriving at random: 2,000 prompt + 200 output tokens" in md
    assert "| Time to first token (`serving.ttft_ms`) | - | ms |" in md
    assert f"| Output throughput (`serving.output_throughput_tps`) | {srv['output_throughput_tps']:g} | tokens/s |" in md
    # below capacity an open loop's queue is its waiting time, not a load that does not run
    below = {**body, "request_rate": 0.95 * srv["requests_per_second"]}
    assert vramplan.estimate_inference(below)["serving"]["queued_requests"] > 0
    assert "The load:" not in report.render_report(below, "inference", "markdown")
    # a closed loop whose requests queue behind the KV pool: how many wait, and how many run
    body = {"gpu_key": "h100_80", "llm_key": "llama-3.3-70b-instruct", "quantization": "fp8", "num_gpus": 2,
            "inference_parallelism": "tensor", "runtime": "vllm", "input_tokens": 5000, "output_tokens": 500,
            "concurrent_users": 50}
    srv = vramplan.estimate_inference(body)["serving"]
    assert srv["running_sequences"] + srv["queued_requests"] == 50 and srv["queued_requests"] > 0
    md = report.render_report(body, "inference", "markdown")
    assert (f"**The load:** {srv['queued_requests']:g} requests wait: the runtime runs {srv['running_sequences']:g} "
            "sequences at once (limited by `kv_cache`).") in md
    # a load that all runs: no alert, what limits it said in the section
    md = report.render_report({**body, "concurrent_users": 4}, "inference", "markdown")
    assert "The load:" not in md and "A closed loop of 4 clients" in md and "Limited by `" in md


@pytest.mark.parametrize("workload", ["inference", "finetuning"])
@pytest.mark.parametrize("fmt", ["markdown", "html"])
def test_provenance_urls_plugins_and_verdict_appear(live, workload, fmt):
    response, text = live[workload, fmt]
    cat = get_catalog()
    body = REQUESTS[workload]
    gpu, model = cat.gpus.get(body["gpu_key"]), cat.models.get(body["llm_key"])
    urls = report._URL.findall(gpu.data["source"]) + report._URL.findall(model.data["source"])
    assert len(urls) >= 2
    for url in urls:
        assert url in text
    assert gpu.provenance.file in text and model.provenance.file in text
    for p in cat.host.plugins():
        assert p.name in text
    assert response["memory_status"] in text
    assert f"{response['vram_usage']:.2f} GiB" in text
    for a in response["assumptions"]:
        assert a.split(":")[0] in text


@pytest.mark.parametrize("workload", ["inference", "finetuning"])
def test_charts_are_well_formed_svg(live, workload):
    response, text = live[workload, "html"]  # the Markdown report shows the same data as tables, no raw SVG
    charts = svgs(text)
    assert len(charts) == 2
    ns = "{http://www.w3.org/2000/svg}"
    bar, line = charts
    segments = [r for r in bar.iter(f"{ns}rect") if r.find(f"{ns}title") is not None]
    assert len(segments) == len(response["memory_details"])
    assert sum(float(r.get("width")) for r in segments) > 0
    points = line.findall(f"{ns}circle")
    assert 10 <= len(points) <= 15  # ~12 context lengths, the request's own, and its marker
    assert any("capacity" in (t.text or "") for t in line.iter(f"{ns}text"))


def test_context_lengths_span_512_to_the_model_context():
    xs = report.context_lengths(131072, 8192)
    assert xs[0] == 512 and xs[-1] == 131072 and 8192 in xs
    assert 12 <= len(xs) <= 13 and xs == sorted(set(xs))


def test_the_crossing_is_where_the_estimate_stops_fitting():
    body = {"gpu_key": "rtx_4090", "llm_key": "llama-3.1-8b-instruct", "quantization": "fp16"}
    ctx = report.report_context(body, "inference")
    x = ctx["curve"]["crossing"]
    assert x is not None and 512 < x < 131072  # 16 GiB of fp16 weights leave room for some, not all, of 128k tokens
    at = vramplan.estimate_inference({**body, "seq_length": x})
    over = vramplan.estimate_inference({**body, "seq_length": x + 1})
    assert at["vram_usage"] <= 24 < over["vram_usage"] or over["memory_status"] == "insufficient"
    assert f"{x:,}" in report.render_context(ctx, "html")


def test_html_is_self_contained(live):
    _, html = live["inference", "html"]
    assert html.startswith("<!DOCTYPE html>")
    assert '<meta name="viewport" content="width=device-width, initial-scale=1">' in html
    for needle in ("<script", "<link", " src=", "url(", "@import", "<img", "<iframe"):
        assert needle not in html, needle
    assert "@media (max-width" in html  # narrow screens get their own rules


def test_markup_from_a_model_name_is_escaped():
    config = dict(get_catalog().models.get("llama-3-8b-instruct").data["config"])
    config["_name_or_path"] = "org/<b>evil<b>|model"  # the name is the last part of a Hub id or path
    body = {"gpu_key": "rtx_4090", "llm_key": "custom", "custom_model": config}
    html = report.render_report(body, "inference", "html")
    md = report.render_report(body, "inference", "markdown")
    assert "<b>evil" not in html and "&lt;b&gt;evil&lt;b&gt;|model" in html
    assert "<b>evil" not in md and "&lt;b&gt;evil&lt;b&gt;\\|model" in md


def test_cli_report_formats():
    from vramplan.cli import main

    args = ["inference", "--gpu", "rtx_4090", "--model", "llama-3-8b-instruct", "--quantization", "q4_k_m"]
    md = CliRunner().invoke(main, [*args, "--format", "markdown"])
    assert md.exit_code == 0, md.output
    assert md.output.startswith("# Inference: Llama 3 8B Instruct") and "## Formulas" in md.output
    html = CliRunner().invoke(main, [*args, "--format", "html"])
    assert html.exit_code == 0 and html.output.startswith("<!DOCTYPE html>") and len(svgs(html.output)) == 2


# -- overrides ----------------------------------------------------------------------------------

class TemplatePlugin:
    def __init__(self, folder: Path, name: str = "throwaway_templates"):
        self.folder, self.__name__ = folder, name

    @vramplan.hookimpl
    def register_report_templates(self):
        return [self.folder]


def _write(folder: Path, name: str, text: str) -> Path:
    path = folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, "utf-8")
    return folder


def test_user_folder_overrides_a_partial(tmp_path, monkeypatch):
    user = _write(tmp_path / "user", "partials/verdict.html.j2",
                  '<section id="verdict">USER VERDICT {{ verdict.status }}</section>\n')
    monkeypatch.setenv("VRAMPLAN_TEMPLATE_DIR", str(user))
    body = REQUESTS["inference"]
    html = report.render_report(body, "inference", "html")
    assert "USER VERDICT " in html and "Fits (" not in html
    assert '<section id="formulas">' in html  # everything else is still the built-in template
    monkeypatch.delenv("VRAMPLAN_TEMPLATE_DIR")
    assert "USER VERDICT" not in report.render_report(body, "inference", "html")


def test_plugin_templates_override_builtins_and_users_override_plugins(tmp_path, monkeypatch):
    monkeypatch.delenv("VRAMPLAN_TEMPLATE_DIR", raising=False)
    first = _write(tmp_path / "first", "report.md.j2", "FIRST PLUGIN {{ verdict.status }}\n")
    _write(first, "partials/verdict.html.j2", "<p>FIRST VERDICT</p>\n")
    second = _write(tmp_path / "second", "report.md.j2", "SECOND PLUGIN {{ verdict.status }}\n")
    body = REQUESTS["inference"]
    with catalog_with(TemplatePlugin(first, "first_templates"), TemplatePlugin(second, "second_templates")):
        assert report.render_report(body, "inference", "markdown").startswith("SECOND PLUGIN ")  # last registered wins
        html = report.render_report(body, "inference", "html")
        assert "FIRST VERDICT" in html and '<section id="memory">' in html  # partial from a plugin, rest built in
        user = _write(tmp_path / "user", "report.md.j2", "USER {{ verdict.status }}\n")
        monkeypatch.setenv("VRAMPLAN_TEMPLATE_DIR", str(user))
        assert report.render_report(body, "inference", "markdown").startswith("USER ")
        monkeypatch.delenv("VRAMPLAN_TEMPLATE_DIR")
    assert report.render_report(body, "inference", "markdown").startswith("# Inference")


def test_undefined_names_fail_loudly(tmp_path, monkeypatch):
    user = _write(tmp_path, "report.md.j2", "{{ verdict.no_such_field }}\n")
    monkeypatch.setenv("VRAMPLAN_TEMPLATE_DIR", str(user))
    body = REQUESTS["inference"]
    with pytest.raises(jinja2.UndefinedError):
        report.render_report(body, "inference", "markdown")


# -- HTTP ---------------------------------------------------------------------------------------

def test_report_http_route():
    from starlette.applications import Starlette
    from starlette.testclient import TestClient

    from vramplan.server.report_routes import ROUTES

    client = TestClient(Starlette(routes=ROUTES))
    url = "/api/v1/vram-calculation/report"
    body = REQUESTS["inference"]
    md = client.post(url + "?format=markdown", json=body)
    assert md.status_code == 200 and md.headers["content-type"].startswith("text/markdown")
    assert md.text.startswith("# Inference")
    html = client.post(url, json=body, headers={"accept": "text/html"})
    assert html.headers["content-type"].startswith("text/html") and html.text.startswith("<!DOCTYPE html>")
    style = re.search(r"<style>(.*?)</style>", html.text, re.S).group(1)
    digest = base64.b64encode(hashlib.sha256(style.encode()).digest()).decode()
    assert f"style-src 'sha256-{digest}'" in html.headers["content-security-policy"]
    assert "script-src" not in html.headers["content-security-policy"]
    by_accept = client.post(url, json=body, headers={"accept": "text/markdown"})
    assert by_accept.text.startswith("# Inference")
    ft = client.post(url + "?workload=finetuning&format=markdown", json=REQUESTS["finetuning"])
    assert ft.status_code == 200 and ft.text.startswith("# Fine-tuning")
    bad = client.post(url + "?workload=training&format=pdf", json=body)
    assert bad.status_code == 422 and [e["field"] for e in bad.json()["errors"]] == ["workload", "format"]
    wrong = client.post(url, json={**body, "seq_length": 0})
    assert wrong.status_code == 422 and wrong.json()["errors"][0]["field"] == "seq_length"


# -- a real browser -----------------------------------------------------------------------------

CHROMIUM = os.environ.get("VRAMPLAN_CHROMIUM", "/usr/bin/chromium")
CHROMEDRIVER = os.environ.get("VRAMPLAN_CHROMEDRIVER", "/usr/bin/chromedriver")


@pytest.mark.skipif(not (os.access(CHROMIUM, os.X_OK) and os.access(CHROMEDRIVER, os.X_OK)),
                    reason=f"needs {CHROMIUM} and {CHROMEDRIVER} (Debian: apt-get install chromium chromium-driver)")
def test_html_report_displays_in_headless_chromium(live, tmp_path):
    webdriver = pytest.importorskip("selenium.webdriver")
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By

    response, html = live["inference", "html"]
    page = tmp_path / "report.html"
    page.write_text(html, "utf-8")
    profile = tempfile.mkdtemp(prefix="vramplan-report-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--disable-background-networking", "--no-first-run", f"--user-data-dir={profile}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(options=options, service=Service(executable_path=CHROMEDRIVER))
    try:
        driver.set_window_size(1280, 1000)
        for width, phone in ((1280, False), (390, True)):
            if phone:  # a phone's viewport, as DevTools' device mode sets it
                driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride",
                                       {"width": width, "height": 844, "deviceScaleFactor": 2, "mobile": True})
            driver.get(page.as_uri())
            verdict = driver.find_element(By.ID, "verdict")
            assert verdict.is_displayed()
            assert response["memory_status"] in verdict.text and f"{response['vram_usage']:.2f} GiB" in verdict.text
            charts = driver.find_elements(By.CSS_SELECTOR, "svg")
            assert len(charts) == 2
            for svg in charts:
                assert svg.is_displayed()
                assert svg.size["width"] > 100 and svg.size["height"] > 50
                assert svg.size["width"] <= width
            # nothing wider than the screen: the page never scrolls sideways (wide tables scroll in their box)
            assert driver.execute_script("return document.documentElement.scrollWidth") <= width
            assert driver.find_element(By.ID, "formulas").is_displayed()
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)
