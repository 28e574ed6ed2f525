"""The page's "cheapest deployment" form in a real headless Chromium, against a real `vramplan serve`:
the form posts a plan with find ["cheapest_deployment"] and draws the ranked table the API answers."""

from __future__ import annotations

import pytest
from server_fixtures import isolated_data_dir, live_server  # noqa: F401
from test_browser import browser, csp_violations, pick, wait  # noqa: F401 - the same browser fixture and helpers

import vramplan


def fill(driver, element_id: str, text: str) -> None:
    from selenium.webdriver.common.by import By

    field = driver.find_element(By.ID, element_id)
    field.clear()
    field.send_keys(text)


def ask(driver, model: str, fields: dict[str, str]) -> None:
    """Pick the model, fill the form's fields (deploy-<name> -> text), submit and wait for the table."""
    from selenium.webdriver.common.by import By

    pick(driver, "deploy-llm_key", model)
    for name, text in fields.items():
        fill(driver, f"deploy-{name}", text)
    driver.find_element(By.ID, "deploy-submit").click()
    wait(driver, lambda d: d.find_element(By.ID, "deploy-results").is_displayed())


def open_form(driver, base: str) -> None:
    from selenium.webdriver.common.by import By

    driver.get(base + "/")
    wait(driver, lambda d: len(d.find_elements(By.CSS_SELECTOR, "#deploy-llm_key option")) > 2)
    driver.find_element(By.ID, "tab-deploy").click()  # the form lives in its own view of the page
    wait(driver, lambda d: d.find_element(By.ID, "deploy-form").is_displayed())


def test_the_form_draws_the_ranked_table_the_api_answers(browser, live_server):
    from selenium.webdriver.common.by import By

    base, _ = live_server
    open_form(browser, base)
    ask(browser, "llama-3-8b-instruct", {"input_tokens": "1000", "output_tokens": "200", "load-value": "3", "ttft_ms": "1500",
                                         "itl_ms": "60", "runtimes": "vllm, llama.cpp",
                                         "gpu_hour_costs": "l4=0.8, a10=0.9, rtx_4090=0.5", "max_deployments": "5"})
    rows = browser.find_elements(By.CSS_SELECTOR, "#deploy-table tbody tr")
    # The same question through the Python API: the table shows its answer, row for row.
    answer = vramplan.plan({"workload": "inference", "find": ["cheapest_deployment"], "llm_key": "llama-3-8b-instruct",
                            "input_tokens": 1000, "output_tokens": 200, "request_rate": 3,
                            "slo": {"ttft_ms": 1500, "itl_ms": 60}, "runtimes": ["vllm", "llama.cpp"],
                            "gpu_hour_costs": {"l4": 0.8, "a10": 0.9, "rtx_4090": 0.5},
                            "max_deployments": 5})["cheapest_deployment"]
    assert len(rows) == len(answer["value"]) == 5
    assert "best" in rows[0].get_attribute("class")
    for tr, expected in zip(rows, answer["value"]):
        cells = [td.text for td in tr.find_elements(By.TAG_NAME, "td")]
        assert cells[1] == expected["gpu_key"]
        assert int(cells[2]) == expected["num_gpus"] and cells[4] == expected["quantization"]
        assert cells[6] == expected["runtime"] and int(cells[7]) == expected["replicas"]
    first = [td.text for td in rows[0].find_elements(By.TAG_NAME, "td")]
    # priced GPUs first: the best row carries the cost the answer computed from the price given
    assert float(first[12]) == pytest.approx(answer["value"][0]["cost_per_hour"], abs=0.005)
    summary = browser.find_element(By.ID, "deploy-summary").text
    assert f"{answer['considered']:,}" in summary and "configurations considered" in summary
    assert csp_violations(browser) == []


def test_an_slo_nothing_meets_and_a_bad_field_are_explained(browser, live_server):
    from selenium.webdriver.common.by import By

    base, _ = live_server
    open_form(browser, base)
    pick(browser, "deploy-llm_key", "llama-3-8b-instruct")
    fill(browser, "deploy-runtimes", "vllm")
    fill(browser, "deploy-gpu_hour_costs", "l4=0.8")
    fill(browser, "deploy-ttft_ms", "0.001")
    browser.find_element(By.ID, "deploy-submit").click()
    error = wait(browser, lambda d: d.find_element(By.ID, "deploy-error") if d.find_element(By.ID, "deploy-error").is_displayed()
                 else False)
    assert "No deployment meets it" in error.text and "ttft_ms" in error.text

    fill(browser, "deploy-ttft_ms", "2000")
    fill(browser, "deploy-runtimes", "vlm")
    browser.find_element(By.ID, "deploy-submit").click()
    wait(browser, lambda d: "runtimes[0]" in d.find_element(By.ID, "deploy-error").text)
    assert "vllm" in browser.find_element(By.ID, "deploy-error").text  # the closest runtime is offered
    assert not browser.find_element(By.ID, "deploy-results").is_displayed()


def test_the_answer_s_notes_are_shown_under_the_table(browser, live_server):
    from selenium.webdriver.common.by import By

    base, _ = live_server
    open_form(browser, base)
    ask(browser, "llama-3.1-8b-instruct", {"input_tokens": "3000", "output_tokens": "500", "load-value": "1", "ttft_ms": "2000",
                                           "itl_ms": "50", "runtimes": "vllm", "gpu_hour_costs": "rtx_4090=0.5",
                                           "max_deployments": "3"})
    shown = [e.text for e in browser.find_elements(By.CSS_SELECTOR, "#deploy-notes .deploy-note")]
    answer = vramplan.plan({"workload": "inference", "find": ["cheapest_deployment"], "llm_key": "llama-3.1-8b-instruct",
                            "input_tokens": 3000, "output_tokens": 500, "request_rate": 1, "runtimes": ["vllm"],
                            "slo": {"ttft_ms": 2000, "itl_ms": 50}, "gpu_hour_costs": {"rtx_4090": 0.5},
                            "max_deployments": 3})["cheapest_deployment"]
    # the 4090's vLLM cannot start with Llama 3.1's 131,072-token context: its row is launched with a max_model_len
    assert any(n.startswith("vllm on rtx_4090: launched with max_model_len 3,500") for n in answer["notes"])
    assert shown == ["Note: " + n for n in answer["notes"]]
    assert csp_violations(browser) == []
