"""The calculator page in a real headless Chromium (Selenium), against a real `vramplan serve`."""

from __future__ import annotations

import os
import re
import shutil
import tempfile

import pytest
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
    status = driver.find_element(By.ID, "memory-status").text.strip().lower()
    assert status.replace(" ", "_") in {"okay", "moderate", "high", "very_high", "insufficient", "error"}
    if expected_status:
        assert status.replace(" ", "_") == expected_status
    perf = driver.find_elements(By.CSS_SELECTOR, "#performance tr")
    assert len(perf) >= 4
    assert driver.find_element(By.ID, "error").is_displayed() is False
    return results, usage


def test_calculator_inference_and_finetuning(browser, live_server):
    from selenium.webdriver.common.by import By

    base, _ = live_server
    browser.get(base + "/")
    wait(browser, lambda d: d.find_element(By.ID, "calc-form").get_attribute("data-ready") == "true")
    gpu_options = browser.find_elements(By.CSS_SELECTOR, "#gpu_key option")
    assert len(gpu_options) >= 2 and any("24 GiB" in o.text for o in gpu_options)
    assert len(browser.find_elements(By.CSS_SELECTOR, "#llm_key option")) >= 2

    # Inference: the seed's example
    pick(browser, "gpu_key", "rtx_4090")
    pick(browser, "llm_key", "llama-3-8b-instruct")
    pick(browser, "quantization", "q4_k_m")
    browser.find_element(By.ID, "calculate").click()
    _, usage = check_result(browser)
    assert 2 < usage < 24  # an 8B model at ~4.8 bits fits a 24 GiB card
    perf_text = browser.find_element(By.ID, "performance").text
    assert "tokens/s" in perf_text and "Time to first token" in perf_text

    # Fine-tuning: switch the mode, and the numbers and chart are redrawn
    browser.find_element(By.ID, "mode-finetuning").click()
    assert browser.find_element(By.ID, "lora_rank").is_displayed()
    assert not browser.find_element(By.ID, "quantization").is_displayed()
    pick(browser, "finetuning_method", "lora")
    batch = browser.find_element(By.ID, "batch_size")
    batch.clear()
    batch.send_keys("4")
    browser.find_element(By.ID, "calculate").click()
    wait(browser, lambda d: "Training throughput" in d.find_element(By.ID, "performance").text)
    check_result(browser)
    request = browser.find_element(By.ID, "request-json").get_attribute("textContent")
    assert '"finetuning_method": "lora"' in request and '"batch_size": 4' in request

    assert csp_violations(browser) == []


def test_errors_from_the_api_are_shown(browser, live_server):
    from selenium.webdriver.common.by import By

    base, _ = live_server
    browser.get(base + "/")
    wait(browser, lambda d: d.find_element(By.ID, "calc-form").get_attribute("data-ready") == "true")
    seq = browser.find_element(By.ID, "seq_length")
    seq.clear()
    seq.send_keys("0")
    browser.find_element(By.ID, "calculate").click()
    error = wait(browser, lambda d: d.find_element(By.ID, "error") if d.find_element(By.ID, "error").is_displayed()
                 else False)
    assert "seq_length" in error.text


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
