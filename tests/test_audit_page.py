"""The annotation page in a real browser: headless Chromium driven by Selenium against `irp audit serve`.

Annotate 10 records by keyboard, reload (resumes at record 11), undo (changes the last verdict), check the
stored file holds exactly the verdicts given, a second annotator gets the same records in a queue of their
own, and no request of the page leaves loopback. IRP_AUDIT_SCREENSHOT=PATH also saves a screenshot
(docs/audit_page.png is made that way).
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
MISSING = ("needs Chromium and chromium-driver: run `make system-deps` "
           "(or `sudo apt-get install -y chromium chromium-driver`)")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def audit_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from irp.audit.sample import write_sample
    from irp.data.simulate import SimConfig, simulate

    records = list(simulate(SimConfig(n=60, seed=3)))  # voice-like queries with context and product attributes
    return write_sample(records, 24, tmp_path_factory.mktemp("audit") / "sample", seed=1).root


@pytest.fixture(scope="module")
def server(audit_dir: Path) -> Iterator[str]:
    port = _free_port()
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1] / "src")}
    proc = subprocess.Popen([sys.executable, "-m", "irp.cli", "audit", "serve", str(audit_dir), "--port", str(port)],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                urllib.request.urlopen(base + "/api/state?annotator=probe", timeout=1).read()
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"irp audit serve did not start: {proc.stdout.read().decode() if proc.stdout else ''}")
                time.sleep(0.1)
        yield base
    finally:
        proc.terminate()
        proc.wait(timeout=10)


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    if not (shutil.which(CHROMIUM) and shutil.which(CHROMEDRIVER)):
        pytest.fail(MISSING)
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    profile = tempfile.mkdtemp(prefix="irp-audit-chrome-")
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-dev-shm-usage",
                 f"--user-data-dir={profile}", "--window-size=1280,1000"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"performance": "ALL"})
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def _wait_text(driver, element_id: str, expected: str, timeout: float = 10.0) -> None:
    from selenium.webdriver.support.ui import WebDriverWait

    WebDriverWait(driver, timeout).until(lambda d: d.find_element("id", element_id).text == expected,
                                         f"#{element_id} never read {expected!r}")


def _press(driver, key: str) -> None:
    driver.find_element("tag name", "body").send_keys(key)


def _stored(audit_dir: Path, annotator: str) -> list[dict]:
    path = audit_dir / "verdicts" / f"{annotator}.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def test_annotate_reload_resume_undo_second_annotator(audit_dir: Path, server: str, browser) -> None:
    queue = [json.loads(line) for line in (audit_dir / "sample.jsonl").read_text().splitlines()]
    total = len(queue)
    driver = browser
    driver.get(server + "/?annotator=alice")
    _wait_text(driver, "position", f"Record 1 of {total}")
    assert driver.find_element("id", "utterance").text == f"\u201c{queue[0]['utterance']}\u201d"
    assert len(driver.find_elements("css selector", "#products .card")) == len(queue[0]["products"])
    keys = "ynyccnyyny"
    given = {"y": "yes", "n": "no", "c": "cant_tell"}
    for i, key in enumerate(keys):
        _press(driver, key)
        _wait_text(driver, "position", f"Record {i + 2} of {total}")
    _wait_text(driver, "progress-text", f"10 / {total} answered")
    if os.environ.get("IRP_AUDIT_SCREENSHOT"):
        driver.save_screenshot(os.environ["IRP_AUDIT_SCREENSHOT"])

    driver.refresh()  # resume where it stopped
    _wait_text(driver, "position", f"Record 11 of {total}")
    assert driver.find_element("id", "utterance").text == f"\u201c{queue[10]['utterance']}\u201d"

    _press(driver, "u")  # undo the 10th ("y") and answer it "n" instead
    _wait_text(driver, "position", f"Record 10 of {total}")
    _wait_text(driver, "progress-text", f"9 / {total} answered")
    _press(driver, "n")
    _wait_text(driver, "position", f"Record 11 of {total}")
    expected = [given[k] for k in keys[:9]] + ["no"]
    stored = _stored(audit_dir, "alice")
    assert [(v["id"], v["verdict"]) for v in stored] == [(r["id"], e) for r, e in zip(queue, expected)]
    assert {v["annotator"] for v in stored} == {"alice"}

    # A bad request is a 4xx naming the field, and loses nothing stored.
    request = urllib.request.Request(server + "/api/verdict", method="POST",
                                     data=json.dumps({"annotator": "alice", "id": "no-such", "verdict": "yes"}).encode())
    with pytest.raises(urllib.error.HTTPError) as bad:
        urllib.request.urlopen(request, timeout=5)
    assert bad.value.code == 422 and json.loads(bad.value.read())["field"] == "id"
    assert _stored(audit_dir, "alice") == stored

    # A second annotator: the same records, in a queue of their own.
    driver.get(server + "/?annotator=bob")
    _wait_text(driver, "position", f"Record 1 of {total}")
    assert driver.find_element("id", "utterance").text == f"\u201c{queue[0]['utterance']}\u201d"
    _press(driver, "y")
    _wait_text(driver, "position", f"Record 2 of {total}")
    from selenium.webdriver.common.keys import Keys

    _press(driver, Keys.BACKSPACE)  # Backspace undoes too
    _wait_text(driver, "position", f"Record 1 of {total}")
    assert _stored(audit_dir, "bob") == []
    _press(driver, "c")
    _wait_text(driver, "position", f"Record 2 of {total}")
    assert [(v["id"], v["verdict"]) for v in _stored(audit_dir, "bob")] == [(queue[0]["id"], "cant_tell")]
    assert _stored(audit_dir, "alice") == stored

    # Every request the page made went to the loopback server.
    urls = [json.loads(entry["message"])["message"]["params"]["request"]["url"]
            for entry in driver.get_log("performance")
            if json.loads(entry["message"])["message"]["method"] == "Network.requestWillBeSent"]
    network = [u for u in urls if u.split(":", 1)[0] in ("http", "https", "ws", "wss", "ftp")]  # not chrome://
    assert any(u.startswith(server + "/api/verdict") for u in network)  # the log does see the page's calls
    assert all(u.startswith(server + "/") for u in network), [u for u in network if not u.startswith(server)]
