"""The coder page end to end: headless Chromium (Selenium + chromedriver) against a real uvicorn server.

Needs Debian's `chromium` and `chromium-driver`. Without them the test is skipped, except in CI (`CI` set),
where it fails: the page must be tested there. Set ICDCODER_SCREENSHOT=PATH to keep a screenshot.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from test_serving import NOTE, PHRASES, trained_tiny_model

# Read in one script call: the table is re-rendered after each answer, so element handles can go stale.
FIRST_CODE = "const r = document.querySelector('#codes tbody tr'); return r ? r.dataset.key : null;"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
CHROMEDRIVER = shutil.which("chromedriver")


def _require_browser() -> tuple[str, str]:
    if CHROMIUM and CHROMEDRIVER:
        return CHROMIUM, CHROMEDRIVER
    reason = "chromium and chromedriver are needed (Debian: apt-get install chromium chromium-driver)"
    if os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no"):
        pytest.fail(f"{reason}; CI must run the browser test.")
    pytest.skip(reason)


@pytest.fixture(scope="module")
def server_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    _require_browser()
    import uvicorn

    from icdcoder.inference.predictor import Predictor
    from icdcoder.serving.app import create_app

    model_dir = trained_tiny_model(tmp_path_factory)
    app = create_app(Predictor(model_dir))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False))
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))  # a free port, held from here on: no race with other processes
    port = sock.getsockname()[1]
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:  # uvicorn sets this once it accepts connections
        if not thread.is_alive() or time.monotonic() > deadline:
            pytest.fail("uvicorn did not start")
        time.sleep(0.01)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(10)
    sock.close()


@pytest.fixture(scope="module")
def driver(tmp_path_factory: pytest.TempPathFactory) -> Iterator[object]:
    chromium, chromedriver = _require_browser()
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    profile = tmp_path_factory.mktemp("chromium-profile")
    downloads = tmp_path_factory.mktemp("downloads")
    opts = webdriver.ChromeOptions()
    opts.binary_location = chromium
    for arg in (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",  # without these Chromium's connections fail on a closed network
        "--disable-component-update",
        "--disable-sync",
        "--disable-dev-shm-usage",
        "--window-size=1400,950",
        f"--user-data-dir={profile}",
    ):
        opts.add_argument(arg)
    opts.add_experimental_option(
        "prefs", {"download.default_directory": str(downloads), "download.prompt_for_download": False}
    )
    # An explicit chromedriver: Selenium Manager (which would try the network) is never used.
    drv = webdriver.Chrome(service=Service(executable_path=chromedriver), options=opts)
    drv.downloads = downloads  # type: ignore[attr-defined]
    try:
        yield drv
    finally:
        drv.quit()


def test_code_review_and_export_in_the_page(server_url: str, driver: object, tmp_path: Path) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.remote.webdriver import WebDriver
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    assert isinstance(driver, WebDriver)
    wait = WebDriverWait(driver, 30)
    driver.get(server_url + "/")
    wait.until(lambda d: "model caml" in d.find_element(By.ID, "model-info").text)
    assert "5 codes" in driver.find_element(By.ID, "model-info").text

    # Empty note: a clear message, no request.
    driver.find_element(By.ID, "suggest").click()
    assert "Paste or drop a note" in driver.find_element(By.ID, "status").text

    driver.find_element(By.ID, "note").send_keys(NOTE)
    driver.find_element(By.ID, "suggest").click()
    wait.until(ec.visibility_of_element_located((By.CSS_SELECTOR, "#codes tbody tr")))
    rows = driver.find_elements(By.CSS_SELECTOR, "#codes tbody tr")
    keys = [r.get_attribute("data-key") for r in rows]
    assert set(keys[:2]) == {"icd10cm:I10", "icd10cm:R50.9"} and len(keys) >= 5
    probs = [float(r.find_element(By.CSS_SELECTOR, ".pct").text.rstrip("%")) for r in rows]
    assert probs == sorted(probs, reverse=True)
    assert "words read" in driver.find_element(By.ID, "status").text

    # Clicking a code highlights its evidence in the note, and only inside the note's own text.
    hyper = rows[keys.index("icd10cm:I10")]
    hyper.find_element(By.CSS_SELECTOR, ".code-btn").click()
    assert "selected" in hyper.get_attribute("class")
    marks = [m.text for m in driver.find_elements(By.CSS_SELECTOR, "#note-view mark.evidence")]
    assert marks and all(m in NOTE for m in marks)
    assert any("hypertension" in m for m in marks)
    assert driver.find_element(By.ID, "note-view").text.replace("\n", " ").strip() == NOTE
    assert "Evidence for I10" in driver.find_element(By.ID, "evidence-list").text

    # Review: accept two, reject one; then export the accepted list.
    for key, verdict in (("icd10cm:I10", "accepted"), ("icd10cm:R50.9", "accepted"), (keys[-1], "rejected")):
        row = driver.find_element(By.CSS_SELECTOR, f'#codes tr[data-key="{key}"]')
        row.find_element(By.CSS_SELECTOR, f".verdict.{verdict}").click()
    assert driver.find_element(By.ID, "summary").text.startswith("2 accepted · 1 rejected")
    exported = json.loads(driver.execute_script("return window.icdcoderExport('json')"))
    assert [a["key"] for a in exported["accepted"]] == [
        k for k in keys if k in ("icd10cm:I10", "icd10cm:R50.9")
    ]
    csv_text = driver.execute_script("return window.icdcoderExport('csv')")
    lines = csv_text.strip().split("\r\n")
    assert lines[0] == "note_id,key,system,code,title,probability,suggested" and len(lines) == 3
    assert any(line.startswith("note,icd10cm:I10,icd10cm,I10,") for line in lines)

    driver.find_element(By.ID, "export-json").click()
    target = Path(driver.downloads) / "accepted_codes.json"  # type: ignore[attr-defined]
    WebDriverWait(driver, 20).until(lambda _d: target.is_file() and target.stat().st_size > 0)
    assert json.loads(target.read_text(encoding="utf-8")) == exported

    shot = os.environ.get("ICDCODER_SCREENSHOT")
    driver.save_screenshot(str(Path(shot) if shot else tmp_path / "coder_page.png"))

    # A server-side refusal is shown with its reason and the page keeps working.
    driver.find_element(By.ID, "edit").click()
    driver.execute_script("document.getElementById('note').value = 'fever '.repeat(40000)")
    driver.find_element(By.ID, "suggest").click()
    wait.until(lambda d: "refused" in d.find_element(By.ID, "status").text)
    status = driver.find_element(By.ID, "status")
    assert "(413)" in status.text and "the limit is 200,000" in status.text
    assert "error" in status.get_attribute("class")
    # Offsets count code points: an emoji (two UTF-16 units in JavaScript) before the evidence must not
    # shift the highlight. chromedriver cannot type non-BMP characters, so the note is set by script.
    emoji_note = f"\U0001f600 Known {PHRASES['icd10cm:N39.0']}."
    driver.execute_script("document.getElementById('note').value = arguments[0]", emoji_note)
    driver.find_element(By.ID, "suggest").click()
    wait.until(lambda d: d.execute_script(FIRST_CODE) == "icd10cm:N39.0")
    assert driver.find_element(By.ID, "summary").text.startswith("0 accepted")  # a new note, a new review
    marks = [m.text for m in driver.find_elements(By.CSS_SELECTOR, "#note-view mark.evidence")]
    listed = driver.find_element(By.ID, "evidence-list").text
    assert marks and all(m in emoji_note and m[0].isalnum() and m[-1].isalnum() for m in marks)
    assert all(f"“{m}”" in listed for m in marks)  # the highlight is exactly the API's span text

    # Evidence under a negation cue is flagged on the code's row and in its evidence list.
    driver.execute_script("document.getElementById('note').value = arguments[0]", "No persistent fever.")
    driver.find_element(By.ID, "suggest").click()
    fever = '#codes tr[data-key="icd10cm:R50.9"]'
    wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, fever + " .badge.context"))
    assert driver.find_element(By.CSS_SELECTOR, fever + " .badge.context").text == "negated"
    driver.find_element(By.CSS_SELECTOR, fever + " .code-btn").click()
    assert "negated" in driver.find_element(By.ID, "evidence-list").text


DROP = """
const [name, bytes] = arguments;
const dt = new DataTransfer();
dt.items.add(new File([new Uint8Array(bytes)], name, { type: "text/plain" }));
document.body.dispatchEvent(new DragEvent("drop", { dataTransfer: dt, bubbles: true, cancelable: true }));
"""


def test_dropping_a_note_file_onto_the_page(server_url: str, driver: object) -> None:
    """A dropped .txt file becomes the note (its name the note id); binary, non-UTF-8 and empty files are
    refused with a message and leave the current note alone."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.remote.webdriver import WebDriver
    from selenium.webdriver.support.ui import WebDriverWait

    assert isinstance(driver, WebDriver)
    wait = WebDriverWait(driver, 30)
    driver.get(server_url + "/")
    wait.until(lambda d: "model caml" in d.find_element(By.ID, "model-info").text)
    status = lambda: driver.find_element(By.ID, "status").text  # noqa: E731

    def drop(name: str, data: bytes) -> None:
        driver.execute_script(DROP, name, list(data))

    drop("admission_17.txt", ("\ufeff" + NOTE).encode("utf-8"))  # a BOM is dropped, not kept as text
    wait.until(lambda _d: "Loaded admission_17.txt" in status())
    assert driver.find_element(By.ID, "note").get_attribute("value") == NOTE
    driver.find_element(By.ID, "suggest").click()
    wait.until(lambda d: d.execute_script(FIRST_CODE) is not None)
    assert (
        json.loads(driver.execute_script("return window.icdcoderExport('json')"))["note_id"] == "admission_17"
    )

    driver.find_element(By.ID, "edit").click()
    for name, data, message in (
        ("scan.txt", b"\x89PNG\r\n\x1a\n\x00\x00", "looks binary"),
        ("latin1.txt", "fièvre".encode("latin-1"), "not valid UTF-8"),
        ("blank.txt", b"  \n", "is empty"),
    ):
        drop(name, data)
        wait.until(lambda _d, m=message: m in status())  # type: ignore[misc]
        assert name in status() and "error" in driver.find_element(By.ID, "status").get_attribute("class")
        assert driver.find_element(By.ID, "note").get_attribute("value") == NOTE
