"""The calculator page in a real headless Chromium (Selenium), against a real `vramplan serve`."""

from __future__ import annotations

import os
import re
import shutil
import tempfile

import pytest

import vramplan
from server_fixtures import ADMIN_SECRET, isolated_data_dir, live_server  # noqa: F401

CHROMIUM = os.environ.get("VRAMPLAN_CHROMIUM", "/usr/bin/chromium")
CHROMEDRIVER = os.environ.get("VRAMPLAN_CHROMEDRIVER", "/usr/bin/chromedriver")
FLAGS = ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--no-first-run", "--window-size=1280,1600"]

pytestmark = pytest.mark.skipif(
    not (os.access(CHROMIUM, os.X_OK) and os.access(CHROMEDRIVER, os.X_OK)),
    reason=f"needs {CHROMIUM} and {CHROMEDRIVER} (Debian: apt-get install chromium chromium-driver)")


@pytest.fixture
def browser():
    webdriver = pytest.importorskip("selenium.webdriver")
    from selenium.webdriver.chrome.service import Service

    profile = tempfile.mkdtemp(prefix="vramplan-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={profile}")
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(options=options, service=Service(executable_path=CHROMEDRIVER))
    driver.set_page_load_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def wait(driver, condition, timeout=20):
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, timeout).until(condition)


def pick(driver, element_id, value):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    Select(driver.find_element(By.ID, element_id)).select_by_value(value)


def number(text: str) -> float:
    return float(re.sub(r"[^\d.]", "", text))


def csp_violations(driver) -> list[str]:
    return [e["message"] for e in driver.get_log("browser") if "Content Security Policy" in e["message"]]


def check_result(driver, expected_status=None):
    from selenium.webdriver.common.by import By

    results = wait(driver, lambda d: d.find_element(By.ID, "results") if d.find_element(By.ID, "results").is_displayed()
                   else False)
    segments = driver.find_elements(By.CSS_SELECTOR, "#memory-chart rect.segment")
    assert len(segments) >= 2, "the stacked bar has a segment per memory component"
    widths = [float(s.get_attribute("width")) for s in segments]
    assert all(w > 0 for w in widths) and sum(widths) <= 1000.5
    legend = driver.find_elements(By.CSS_SELECTOR, "#chart-legend li")
    assert len(legend) == len(segments)
    usage = number(driver.find_element(By.ID, "vram-usage").text)
    assert usage > 0
    gib_sum = sum(float(s.get_attribute("data-gib")) for s in segments)
    assert gib_sum == pytest.approx(usage, abs=0.05)  # the chart shows what the number says
    status = driver.find_element(By.ID, "memory-status").get_attribute("data-status")
    assert status in {"okay", "moderate", "high", "very_high", "insufficient", "error"}
    if expected_status:
        assert status == expected_status
    perf = driver.find_elements(By.CSS_SELECTOR, "#performance tr")
    assert len(perf) >= 4
    assert driver.find_element(By.ID, "error").is_displayed() is False
    return results, usage


def ready(driver, base):
    from selenium.webdriver.common.by import By

    driver.get(base + "/")
    wait(driver, lambda d: d.find_element(By.ID, "calc-form").get_attribute("data-ready") == "true")


def shown_request(driver) -> dict:
    import json

    from selenium.webdriver.common.by import By

    return json.loads(driver.find_element(By.ID, "request-json").get_attribute("textContent"))


def set_number(driver, element_id, value):
    from selenium.webdriver.common.by import By

    field = driver.find_element(By.ID, element_id)
    field.clear()
    field.send_keys(str(value))


def test_calculator_inference_and_finetuning(browser, live_server):
    from selenium.webdriver.common.by import By

    base, _ = live_server
    ready(browser, base)
    gpu_options = browser.find_elements(By.CSS_SELECTOR, "#gpu_key option")
    assert len(gpu_options) >= 2 and any("24 GiB" in o.text for o in gpu_options)
    assert len(browser.find_elements(By.CSS_SELECTOR, "#llm_key option")) >= 2

    # Inference: the seed's example
    pick(browser, "gpu_key", "rtx_4090")
    pick(browser, "llm_key", "llama-3-8b-instruct")
    pick(browser, "quantization", "q4_k_m")
    browser.find_element(By.ID, "calculate").click()
    _, usage = check_result(browser)
    seed = vramplan.estimate_inference({"gpu_key": "rtx_4090", "llm_key": "llama-3-8b-instruct", "quantization": "q4_k_m"})
    assert usage == seed["vram_usage"]  # the page shows the API's number
    perf_text = browser.find_element(By.ID, "performance").text
    assert "tokens/s" in perf_text and "Time to first token" in perf_text
    # only what differs from the API's defaults is sent
    assert shown_request(browser) == {"gpu_key": "rtx_4090", "llm_key": "llama-3-8b-instruct", "quantization": "q4_k_m"}
    # memory against context length: a point per context length, the request's own marked
    wait(browser, lambda d: len(d.find_elements(By.CSS_SELECTOR, "#context-chart circle.pt")) >= 10)
    assert browser.find_elements(By.CSS_SELECTOR, "#context-chart circle.marker")
    assert "fits" in browser.find_element(By.ID, "curve-note").text.lower()

    # Fine-tuning: switch the mode, and the numbers and chart are redrawn
    browser.find_element(By.CSS_SELECTOR, ".segmented label:nth-child(2)").click()
    assert browser.find_element(By.ID, "lora_rank").is_displayed()
    assert not browser.find_element(By.ID, "quantization").is_displayed()
    pick(browser, "finetuning_method", "lora")
    set_number(browser, "batch_size", 4)
    browser.find_element(By.ID, "calculate").click()
    wait(browser, lambda d: "Training throughput" in d.find_element(By.ID, "performance").text)
    check_result(browser)
    assert shown_request(browser) == {"gpu_key": "rtx_4090", "llm_key": "llama-3-8b-instruct", "batch_size": 4}

    assert csp_violations(browser) == []


def test_every_control_starts_at_the_api_default(browser, live_server):
    """The form is generated from the request schemas: each control's initial state is the schema's default."""
    import json

    from selenium.webdriver.common.by import By
    from vramplan.datafiles import load_schema

    base, _ = live_server
    ready(browser, base)
    checked = 0
    for workload, schema in (("inference", "inference-request"), ("finetuning", "finetuning-request")):
        props = load_schema(schema)["properties"]
        defaults = {k: v["default"] for k, v in props.items() if "default" in v}
        defaults.update({f"optimization_config.{k}": v["default"]
                         for k, v in props["optimization_config"]["properties"].items() if "default" in v})
        if workload == "finetuning":
            browser.find_element(By.CSS_SELECTOR, ".segmented label:nth-child(2)").click()
        for el in browser.find_elements(By.CSS_SELECTOR, "[data-field]"):
            field = el.get_attribute("data-field")
            if not el.is_enabled() or field not in defaults:
                continue
            want = defaults[field]
            assert json.loads(el.get_attribute("data-default")) == want, field
            if isinstance(want, bool):
                assert el.is_selected() == want, f"{workload} {field}"
            else:
                assert float(el.get_attribute("value")) == want if isinstance(want, (int, float)) \
                    else el.get_attribute("value") == want, f"{workload} {field}"
            checked += 1
    assert checked > 30
    # gradient checkpointing is on by default in the API, so it is checked on the page
    assert browser.find_element(By.ID, "gradient_checkpointing").is_selected()


def test_fine_tuning_defaults_give_the_apis_numbers(browser, live_server):
    """QLoRA of a 7B model on an RTX 3090 with every other field left at the defaults: the page and the API agree."""
    from selenium.webdriver.common.by import By

    base, _ = live_server
    ready(browser, base)
    browser.find_element(By.CSS_SELECTOR, ".segmented label:nth-child(2)").click()
    pick(browser, "gpu_key", "rtx_3090")
    pick(browser, "llm_key", "llama-2-7b")
    pick(browser, "finetuning_method", "qlora")
    browser.find_element(By.ID, "calculate").click()
    _, usage = check_result(browser)
    api = vramplan.estimate_finetuning({"gpu_key": "rtx_3090", "llm_key": "llama-2-7b", "finetuning_method": "qlora"})
    assert usage == api["vram_usage"]
    assert browser.find_element(By.ID, "memory-status").get_attribute("data-status") == api["memory_status"]
    assert "gradient_checkpointing" in browser.find_element(By.ID, "performance").text


def test_suggestions_appear_and_apply(browser, live_server):
    from selenium.webdriver.common.by import By

    base, _ = live_server
    ready(browser, base)
    # Llama 3 70B in fp16 (131 GiB of weights) on one 24 GiB card
    pick(browser, "gpu_key", "rtx_4090")
    pick(browser, "llm_key", "llama-3-70b-instruct")
    browser.find_element(By.ID, "calculate").click()
    check_result(browser, "insufficient")
    api = vramplan.estimate_inference({"gpu_key": "rtx_4090", "llm_key": "llama-3-70b-instruct"})
    cards = wait(browser, lambda d: d.find_elements(By.CSS_SELECTOR, "#suggestion-list li.suggestion"))
    assert len(cards) == len(api["suggestions"])
    first = api["suggestions"][0]
    assert first["summary"].lower() in cards[0].text.lower()
    cards[0].find_element(By.CSS_SELECTOR, "button.apply").click()
    wait(browser, lambda d: d.find_element(By.ID, "memory-status").get_attribute("data-status") == first["memory_status"])
    _, usage = check_result(browser, first["memory_status"])
    assert usage == first["vram_usage"]  # applied, the change gives the suggested result
    request = shown_request(browser)
    for key, value in first["change"].items():
        assert request[key] == value
    assert browser.find_element(By.ID, "suggestions").is_displayed() == (first["memory_status"] == "very_high")


def test_runtime_settings_are_a_json_field_and_a_slots_suggestion_applies_to_it(browser, live_server):
    """llama.cpp serving 2 requests/s of 1000 + 200 tokens from one slot is past capacity; the page offers the fewest
    llama-server slots that serve it, and applying it writes runtime_settings, which the next request sends."""
    from selenium.webdriver.common.by import By

    base, _ = live_server
    ready(browser, base)
    body = {"gpu_key": "rtx_4090", "llm_key": "llama-3.1-8b", "quantization": "q4_k_m", "runtime": "llama.cpp",
            "input_tokens": 1000, "output_tokens": 200, "request_rate": 2, "enable_continuous_batching": True}
    for field, value in body.items():
        if isinstance(value, str):
            pick(browser, field, value)
        elif isinstance(value, bool):
            if browser.find_element(By.ID, field).is_selected() != value:
                browser.find_element(By.ID, field).click()
        else:
            set_number(browser, field, value)
    api = vramplan.estimate_inference(body)
    slots = next(s for s in api["suggestions"] if "slots instead of 1" in s["summary"])
    browser.find_element(By.ID, "calculate").click()
    cards = wait(browser, lambda d: d.find_elements(By.CSS_SELECTOR, "#suggestion-list li.suggestion"))
    card = next(c for c in cards if "slots instead of 1" in c.text)
    card.find_element(By.CSS_SELECTOR, "button.apply").click()
    wait(browser, lambda d: shown_request(d).get("runtime_settings") == slots["change"]["runtime_settings"])
    field = browser.find_element(By.ID, "runtime_settings")
    assert json_of(field.get_attribute("value")) == slots["change"]["runtime_settings"]
    _, usage = check_result(browser)
    assert usage == slots["vram_usage"]
    # text that is not a JSON object goes as typed, and the API's error names the field beside it
    field.clear()
    field.send_keys("max_num_seqs=4")
    browser.find_element(By.ID, "calculate").click()
    wait(browser, lambda d: "runtime_settings" in d.find_element(By.ID, "error").text
         or d.find_elements(By.CSS_SELECTOR, "#runtime_settings[aria-invalid='true']"))


def json_of(text: str):
    import json

    return json.loads(text)


def test_the_fit_map_renders_and_a_cell_opens_its_estimate(browser, live_server):
    from selenium.webdriver.common.by import By

    base, _ = live_server
    ready(browser, base)
    pick(browser, "llm_key", "llama-3-8b-instruct")
    browser.find_element(By.ID, "tab-fitmap").click()  # drawn on first open
    cells = wait(browser, lambda d: d.find_elements(By.CSS_SELECTOR, "#fitmap td.cell"), timeout=60)
    columns = browser.find_elements(By.CSS_SELECTOR, "#fitmap thead th.format-col")
    rows = browser.find_elements(By.CSS_SELECTOR, "#fitmap tbody tr:not(.group)")
    assert len(cells) == len(columns) * len(rows) and len(columns) >= 8 and len(rows) >= 40
    # Llama 3 8B in fp16 (15 GiB of weights) does not fit an 8 GiB RTX 4060, in Q4_K_M it does
    cell = browser.find_element(By.CSS_SELECTOR, '#fitmap td.cell[data-gpu="rtx_4060"][data-value="fp16"]')
    assert cell.get_attribute("data-status") == "insufficient"
    cell = browser.find_element(By.CSS_SELECTOR, '#fitmap td.cell[data-gpu="rtx_4060"][data-value="q4_k_m"]')
    api = vramplan.estimate_inference({"gpu_key": "rtx_4060", "llm_key": "llama-3-8b-instruct", "quantization": "q4_k_m"})
    assert cell.get_attribute("data-status") == api["memory_status"]
    assert float(cell.text) == pytest.approx(api["per_user_tps"], abs=0.5)  # the cell shows its decode speed
    browser.execute_script("arguments[0].scrollIntoView({block: 'center'})", cell)
    cell.click()
    wait(browser, lambda d: d.find_element(By.ID, "view-estimate").is_displayed())
    _, usage = check_result(browser, api["memory_status"])
    assert usage == api["vram_usage"]
    assert shown_request(browser) == {"gpu_key": "rtx_4060", "llm_key": "llama-3-8b-instruct", "quantization": "q4_k_m"}
    assert csp_violations(browser) == []


def test_the_planner_answers_and_opens_an_answer(browser, live_server):
    from selenium.webdriver.common.by import By

    base, _ = live_server
    ready(browser, base)
    pick(browser, "gpu_key", "rtx_4090")
    pick(browser, "llm_key", "llama-3.1-8b-instruct")
    browser.find_element(By.ID, "tab-planner").click()
    pick(browser, "plan-headroom", "0")
    browser.find_element(By.ID, "plan-run").click()
    wait(browser, lambda d: d.find_element(By.ID, "plan-results").is_displayed())
    plan = vramplan.plan({"gpu_key": "rtx_4090", "llm_key": "llama-3.1-8b-instruct",
                          "find": ["max_seq_length", "max_batch_size"], "headroom": 0})
    row = browser.find_element(By.CSS_SELECTOR, '#plan-table tr[data-question="max_seq_length"]')
    assert f"{plan['max_seq_length']['value']:,}" in row.text
    assert browser.find_elements(By.CSS_SELECTOR, "#plan-gpus tbody tr.clickable")
    row.find_element(By.CSS_SELECTOR, "button").click()
    _, usage = check_result(browser)
    assert usage == plan["max_seq_length"]["estimate"]["vram_usage"]
    assert shown_request(browser)["seq_length"] == plan["max_seq_length"]["value"]


def test_report_download_interconnect_list_and_serving_panel(browser, live_server):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    base, _ = live_server
    ready(browser, base)
    # the interconnect is a drop-down of the catalog's interconnects, not a free-text box
    options = [o.get_attribute("value") for o in Select(browser.find_element(By.ID, "interconnect_type")).options]
    assert "" in options and {"nvlink_gen4", "pcie4"} <= set(options)
    # a `serving` object in a response is drawn (the field arrives with the serving model; stubbed here)
    browser.execute_script("""
      const real = window.fetch;
      window.fetch = (url, init) => real(url, init).then((r) => {
        if (!String(url).endsWith('/inference')) return r;
        return r.json().then((d) => new Response(JSON.stringify(Object.assign(d, {serving:
          {ttft_ms: 120.5, itl_ms: 8.25, utilisation: 0.5, limited_by: 'memory bandwidth'}})),
          {status: r.status, headers: {'Content-Type': 'application/json'}}));
      });""")
    browser.find_element(By.ID, "calculate").click()
    check_result(browser)
    panel = wait(browser, lambda d: d.find_element(By.ID, "serving-panel") if d.find_element(By.ID, "serving-panel")
                 .is_displayed() else False)
    assert "Time to first token" in panel.text and "120.5 ms" in panel.text and "50 %" in panel.text
    browser.find_element(By.ID, "report-html").click()
    link = wait(browser, lambda d: d.find_elements(By.ID, "report-link"))[0]
    assert link.get_attribute("download").endswith(".html") and int(link.get_attribute("data-size")) > 10000
    browser.find_element(By.ID, "report-markdown").click()
    wait(browser, lambda d: d.find_element(By.ID, "report-link").get_attribute("download").endswith(".md"))


def test_errors_from_the_api_are_shown_once_beside_the_field(browser, live_server):
    from selenium.webdriver.common.by import By

    base, _ = live_server
    ready(browser, base)
    set_number(browser, "seq_length", 0)
    browser.find_element(By.ID, "calculate").click()
    error = wait(browser, lambda d: d.find_element(By.ID, "error") if d.find_element(By.ID, "error").is_displayed()
                 else False)
    assert "highlighted" in error.text
    field = browser.find_element(By.ID, "seq_length")
    assert field.get_attribute("aria-invalid") == "true"
    message = "0 is less than the minimum of 1"
    assert browser.find_element(By.TAG_NAME, "body").text.count(message) == 1  # once, beside the field
    set_number(browser, "seq_length", 2048)
    browser.find_element(By.ID, "calculate").click()
    check_result(browser)
    assert field.get_attribute("aria-invalid") is None


def test_the_page_cannot_be_used_without_its_session(browser, live_server):
    """The page's cookie alone does not open the API: the X-Vramplan-Page header must come with it."""
    from selenium.webdriver.common.by import By

    base, _ = live_server
    browser.get(base + "/")
    wait(browser, lambda d: d.find_element(By.ID, "calc-form").get_attribute("data-ready") == "true")
    status = browser.execute_async_script(
        "const done = arguments[arguments.length - 1];"
        "fetch('/api/v1/vram-calculation/gpus').then(r => done(r.status));")
    assert status == 401  # the cookie alone is not enough: the page header is required


def test_operator_creates_and_revokes_a_token_in_the_settings_page(browser, live_server):
    import httpx
    from selenium.webdriver.common.by import By

    base, _ = live_server
    browser.get(base + "/settings")
    browser.find_element(By.ID, "secret").send_keys(ADMIN_SECRET)
    browser.find_element(By.CSS_SELECTOR, "#login-form button").click()
    name = wait(browser, lambda d: d.find_elements(By.ID, "token-name"))[0]
    name.send_keys("from-the-browser")
    browser.find_element(By.CSS_SELECTOR, "#create-form button").click()
    token = wait(browser, lambda d: d.find_elements(By.ID, "new-token-value"))[0].text.strip()
    headers = {"Authorization": f"Bearer {token}"}
    assert httpx.get(f"{base}/api/v1/vram-calculation/llms", headers=headers).status_code == 200

    browser.get(base + "/settings")  # listed, not shown again
    assert "from-the-browser" in browser.find_element(By.ID, "token-table").text
    assert token not in browser.page_source
    browser.find_element(By.CSS_SELECTOR, "#token-table tr.active button.danger").click()
    wait(browser, lambda d: d.find_elements(By.CSS_SELECTOR, "#token-table tr.revoked"))
    assert httpx.get(f"{base}/api/v1/vram-calculation/llms", headers=headers).status_code == 401
    assert csp_violations(browser) == []


def test_with_page_sessions_off_the_page_uses_a_pasted_token(browser, tmp_path):
    import subprocess
    import sys

    from selenium.webdriver.common.by import By
    from server_fixtures import running_server

    with running_server(tmp_path, VRAMPLAN_PAGE_SESSIONS="0") as (base, env):
        token = subprocess.run([sys.executable, "-m", "vramplan.server", "tokens", "create", "--name", "web"],
                               env=env, capture_output=True, text=True, check=True).stdout.strip()
        browser.get(base + "/")
        field = browser.find_element(By.ID, "api_token")
        field.send_keys("vp_wrong")
        browser.find_element(By.ID, "seq_length").click()  # leaving the field fires "change"
        error = wait(browser, lambda d: d.find_element(By.ID, "error") if d.find_element(By.ID, "error").is_displayed()
                     else False)
        assert "token" in error.text.lower()
        field.clear()
        field.send_keys(token)
        browser.find_element(By.ID, "seq_length").click()
        wait(browser, lambda d: d.find_element(By.ID, "calc-form").get_attribute("data-ready") == "true")
        browser.find_element(By.ID, "calculate").click()
        check_result(browser)
