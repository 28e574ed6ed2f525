"""Screenshots of the page for the docs: `python docs/screenshots.py [OUT_DIR]` (default: docs/).

Starts `vramplan serve` on a free loopback port with a throwaway data folder, drives Debian's headless
Chromium with Selenium (as the browser tests do) and writes screenshot-calculator.png,
screenshot-suggestions.png, screenshot-planner.png, screenshot-fitmap.png and screenshot-deploy.png.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CHROMIUM = os.environ.get("VRAMPLAN_CHROMIUM", "/usr/bin/chromium")
CHROMEDRIVER = os.environ.get("VRAMPLAN_CHROMEDRIVER", "/usr/bin/chromedriver")
WIDTH = 1440


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(tmp: str) -> tuple[subprocess.Popen, str]:
    import httpx

    port = free_port()
    env = {**os.environ, "XDG_DATA_HOME": tmp, "VRAMPLAN_ADMIN_SECRET": "screenshots-secret-0123456789",
           "VRAMPLAN_DATABASE_URL": f"sqlite:///{tmp}/tokens.db"}
    proc = subprocess.Popen([sys.executable, "-m", "vramplan.server", "serve", "--host", "127.0.0.1", "--port", str(port),
                             "--log-level", "warning"], env=env)
    base = f"http://127.0.0.1:{port}"
    for _ in range(300):
        try:
            if httpx.get(base + "/healthz", timeout=1).status_code == 200:
                return proc, base
        except httpx.HTTPError:
            time.sleep(0.1)
    proc.kill()
    raise SystemExit("vramplan serve did not come up")


def browser(profile: str):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--hide-scrollbars",
                 f"--window-size={WIDTH},1000", f"--user-data-dir={profile}", "--force-device-scale-factor=1"):
        options.add_argument(flag)
    return webdriver.Chrome(options=options, service=Service(executable_path=CHROMEDRIVER))


def wait(driver, condition, timeout=60):
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, timeout).until(condition)


def pick(driver, element_id: str, value: str) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    Select(driver.find_element(By.ID, element_id)).select_by_value(value)


def shoot(driver, path: Path, height: int | None = None) -> None:
    """The page at full height (or ``height`` CSS pixels), as a PNG."""
    total = height or driver.execute_script("return document.documentElement.scrollHeight")
    driver.set_window_size(WIDTH, min(int(total) + 20, 4000))
    driver.execute_script("window.scrollTo(0, 0)")
    time.sleep(0.4)
    driver.save_screenshot(str(path))
    driver.set_window_size(WIDTH, 1000)
    print("wrote", path)


def calculate(driver) -> None:
    from selenium.webdriver.common.by import By

    driver.find_element(By.ID, "calculate").click()
    wait(driver, lambda d: d.find_element(By.ID, "results").is_displayed()
         and d.find_element(By.ID, "curve-note").text not in ("", "…"))


def main(out: Path) -> None:
    from selenium.webdriver.common.by import By

    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="vramplan-shots-") as tmp:
        proc, base = start_server(tmp)
        driver = browser(os.path.join(tmp, "profile"))
        try:
            driver.get(base + "/")
            wait(driver, lambda d: d.find_element(By.ID, "calc-form").get_attribute("data-ready") == "true")
            # 1. the calculator: the seed's example
            pick(driver, "llm_key", "llama-3.1-8b-instruct")
            pick(driver, "gpu_key", "rtx_4090")
            pick(driver, "quantization", "q4_k_m")
            seq = driver.find_element(By.ID, "seq_length")
            seq.clear()
            seq.send_keys("16384")
            calculate(driver)
            shoot(driver, out / "screenshot-calculator.png")
            # 2. does not fit: Llama 3.3 70B in fp16 on one RTX 4090, with what would make it fit
            pick(driver, "llm_key", "llama-3.3-70b-instruct")
            pick(driver, "quantization", "fp16")
            seq.clear()
            seq.send_keys("8192")
            calculate(driver)
            wait(driver, lambda d: d.find_elements(By.CSS_SELECTOR, "#suggestion-list li.suggestion"))
            shoot(driver, out / "screenshot-suggestions.png")
            # 3. the planner: Llama 3.1 8B in Q4_K_M on the RTX 4090
            pick(driver, "llm_key", "llama-3.1-8b-instruct")
            pick(driver, "quantization", "q4_k_m")
            driver.find_element(By.ID, "tab-planner").click()
            driver.find_element(By.ID, "plan-run").click()
            wait(driver, lambda d: d.find_element(By.ID, "plan-results").is_displayed())
            shoot(driver, out / "screenshot-planner.png", height=1500)
            # 4. the fit map: Llama 3.1 8B at 16k tokens on every GPU in the common formats
            driver.find_element(By.ID, "tab-fitmap").click()
            driver.find_element(By.ID, "fitmap-run").click()
            wait(driver, lambda d: d.find_elements(By.CSS_SELECTOR, "#fitmap td.cell"), timeout=120)
            shoot(driver, out / "screenshot-fitmap.png", height=1500)
            # 5. the cheapest deployment: Llama 3.1 8B, 2,000-token prompts, 500-token answers, 5 requests/s
            driver.find_element(By.ID, "tab-deploy").click()
            wait(driver, lambda d: len(d.find_elements(By.CSS_SELECTOR, "#deploy-llm_key option")) > 2)
            pick(driver, "deploy-llm_key", "llama-3.1-8b-instruct")
            driver.find_element(By.ID, "deploy-submit").click()
            wait(driver, lambda d: d.find_element(By.ID, "deploy-results").is_displayed(), timeout=180)
            shoot(driver, out / "screenshot-deploy.png", height=1500)
        finally:
            driver.quit()
            proc.terminate()
            proc.wait(timeout=10)


if __name__ == "__main__":
    import argparse

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out", nargs="?", type=Path, default=Path(__file__).resolve().parent, help="folder for the PNGs")
    main(ap.parse_args().out)
