"""Screenshot of the coder page (docs/img/coder_page.png) with a trained model directory and one note.

    .venv/bin/python benchmarks/coder_page_screenshot.py MODEL_DIR --data DATA_DIR --note-id ID --out PNG

Serves MODEL_DIR with uvicorn on a free local port, opens the page in headless Chromium (Debian's chromium +
chromium-driver, as tests/test_browser.py), pastes the note of DATA_DIR's test split with that id, asks for
codes, accepts the gold codes among the suggestions, selects `--select` (default: the first suggested code
with exact evidence) so its evidence is highlighted, and saves the window as PNG.
"""

from __future__ import annotations

import argparse
import shutil
import socket
import threading
import time
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("model_dir", type=Path)
    ap.add_argument("--data", type=Path, required=True)
    ap.add_argument("--note-id", required=True)
    ap.add_argument("--select", default=None, help="code key whose evidence is shown (system:code)")
    ap.add_argument("--top-k", type=int, default=12)
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()

    import uvicorn
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    from icdcoder.data.prepared import PreparedDataset
    from icdcoder.inference.predictor import Predictor
    from icdcoder.serving.app import create_app

    note = next(d for d in PreparedDataset.open(args.data).documents("test") if d.id == args.note_id)
    server = uvicorn.Server(uvicorn.Config(create_app(Predictor(args.model_dir)), log_level="warning"))
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.05)
    url = f"http://127.0.0.1:{sock.getsockname()[1]}/"
    opts = webdriver.ChromeOptions()
    opts.binary_location = shutil.which("chromium") or "chromium"
    for arg in (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--window-size=1400,950",
    ):
        opts.add_argument(arg)
    drv = webdriver.Chrome(service=Service(executable_path=shutil.which("chromedriver")), options=opts)
    try:
        wait = WebDriverWait(drv, 120)
        drv.get(url)
        wait.until(lambda d: "model" in d.find_element(By.ID, "model-info").text)
        drv.execute_script(f"document.getElementById('top-k').value = {args.top_k}")
        drv.execute_script("document.getElementById('note').value = arguments[0]", note.text)
        drv.find_element(By.ID, "suggest").click()
        wait.until(ec.visibility_of_element_located((By.CSS_SELECTOR, "#codes tbody tr")))
        keys = [r.get_attribute("data-key") for r in drv.find_elements(By.CSS_SELECTOR, "#codes tbody tr")]
        gold = set(note.codes)
        for key in keys:
            if key in gold:
                row = drv.find_element(By.CSS_SELECTOR, f'#codes tr[data-key="{key}"]')
                row.find_element(By.CSS_SELECTOR, ".verdict.accepted").click()
        select = args.select or next((k for k in keys if k in gold), keys[0])
        row = drv.find_element(By.CSS_SELECTOR, f'#codes tr[data-key="{select}"]')
        row.find_element(By.CSS_SELECTOR, ".code-btn").click()
        time.sleep(0.5)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        drv.save_screenshot(str(args.out))
        found = len(gold & set(keys))
        print(f"{args.out}: note {note.id}, {len(keys)} codes shown, {found} gold, {select} selected")
    finally:
        drv.quit()
        server.should_exit = True
        thread.join(10)


if __name__ == "__main__":
    main()
