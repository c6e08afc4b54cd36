"""The triage console in a real browser: Debian's headless Chromium driven by Selenium and
chromedriver, against `pacs-triage serve` fed by DCMTK storescu.

A STAT study appears at the top of an open worklist within seconds (server-sent events, no
reload); its evidence is highlighted; the key image loads; a dead letter is replayed from
the operator view; an anonymous session never sees the patient's name.

Screenshots are kept in tmp/artefacts/console/ (or $PACS_TRIAGE_ARTEFACTS), path printed.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pydicom
import pytest

from dicomgen import SeriesSpec, StudySpec, write_study
from peers import dcmtk, free_port, serve_process, service_ready, wait_for
from sink_peers import HttpServer as HookPeer

ROOT = Path(__file__).resolve().parents[2]
ARTEFACTS = Path(os.environ.get("PACS_TRIAGE_ARTEFACTS") or ROOT / "tmp" / "artefacts" / "console")
CHROMIUM, CHROMEDRIVER = shutil.which("chromium") or "/usr/bin/chromium", shutil.which("chromedriver") or "/usr/bin/chromedriver"
PATIENT = "PHANTOM^KEYIMAGE"
PASSWORD = "correct-horse-42"

pytestmark = pytest.mark.skipif(not (Path(CHROMIUM).exists() and Path(CHROMEDRIVER).exists()),
                                reason="chromium and chromium-driver are installed by `make test` (system-test)")


def stat_ct_study(out: Path) -> tuple[str, list[Path]]:
    """A CT with a screw 5 mm into the canal, and a request that reads as cauda equina (STAT)."""
    from phantom import PhantomSpec, ScrewSpec, write_series

    spec = PhantomSpec(screws=[ScrewSpec(0, "left", medial=5.0), ScrewSpec(0, "right"),
                               ScrewSpec(1, "left"), ScrewSpec(1, "right")])
    files = write_series(spec, out)
    for f in files:
        ds = pydicom.dcmread(f)
        ds.PatientName, ds.PatientID, ds.AccessionNumber = PATIENT, "PID-CONSOLE-1", "ACC-CS-STAT"
        ds.ReasonForTheRequestedProcedure = "Arthrodèse L4-S1 J+1, anesthésie en selle. Pas de fièvre."
        ds.save_as(f, enforce_file_format=True)
    return str(pydicom.dcmread(files[0], stop_before_pixels=True).StudyInstanceUID), files


@pytest.fixture(scope="module")
def hook():
    peer = HookPeer(status=503).start()  # refuses until the test lets it accept: a dead letter
    yield peer
    peer.stop()


@pytest.fixture(scope="module")
def service(tmp_path_factory, hook):
    root = tmp_path_factory.mktemp("console")
    users = root / "users"
    proc = subprocess.run([sys.executable, "-m", "agent.cli", "console-user", "alice", "--users-file", str(users)],
                          input=PASSWORD + "\n", capture_output=True, text=True, timeout=30)
    assert proc.returncode == 0, proc.stderr
    port, http_port = free_port(), free_port()
    env = dict(os.environ, PACS_TRIAGE_STABLE_AFTER="1", PACS_TRIAGE_CONSOLE_USERS=str(users),
               PACS_TRIAGE_SINK_ATTEMPTS="1", PACS_TRIAGE_SINK_BACKOFF="0.1", PACS_TRIAGE_CONSOLE_POLL_INTERVAL="0.3")
    env.pop("PACS_TRIAGE_REDIS_URL", None)
    with serve_process(root / "data", root / "serve.log", ["--port", port, "--webhook", hook.url], env,
                       http_port=http_port, stop_timeout=30):
        yield {"port": port, "url": f"http://127.0.0.1:{http_port}/console/", "root": root, "log": root / "serve.log"}


def _browser(profile: Path):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-dev-shm-usage", f"--user-data-dir={profile}", "--window-size=1280,900"):
        opts.add_argument(flag)
    return webdriver.Chrome(service=Service(CHROMEDRIVER), options=opts)


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    driver = _browser(tmp_path_factory.mktemp("chromium-profile"))
    driver.set_page_load_timeout(30)
    ARTEFACTS.mkdir(parents=True, exist_ok=True)
    print(f"\nconsole screenshots: {ARTEFACTS}")
    yield driver
    driver.quit()


def shot(driver, name: str) -> Path:
    path = ARTEFACTS / f"{name}.png"
    driver.save_screenshot(str(path))
    return path


def rows(driver) -> list[str]:
    """The study UIDs of the worklist rows, in order (read in one go: the rows are replaced live)."""
    return driver.execute_script(
        "return Array.from(document.querySelectorAll('#rows tr.row')).map(r => r.getAttribute('data-uid'));")


def top_text(driver) -> str:
    return driver.execute_script("var r = document.querySelector('#rows tr.row'); return r ? r.innerText : '';")


def text_of(driver, element_id: str) -> str:
    """The element's text read in the page (no element reference to go stale while the page reloads)."""
    return driver.execute_script(
        "var e = document.getElementById(arguments[0]); return e ? e.innerText : '';", element_id) or ""


def login(driver, base: str) -> None:
    driver.get(base + "login")
    driver.find_element("id", "login-user").send_keys("alice")
    driver.find_element("id", "login-password").send_keys(PASSWORD)
    driver.find_element("id", "login-submit").click()
    wait_for(lambda: text_of(driver, "user").strip() == "alice", timeout=10, what="logged in")


def test_stat_study_tops_the_open_worklist_live_and_anonymous_sees_no_patient_data(service, browser, tmp_path):
    base = service["url"]
    routine = StudySpec(accession="ACC-CS-ROUTINE", reason="Contrôle à 1 an d'une arthrodèse, asymptomatique",
                        series=[SeriesSpec("MR", "SAG T2", 2)])
    dcmtk("storescu", "-aec", "PACSTRIAGE", "127.0.0.1", service["port"], *write_study(tmp_path / "r", routine))
    browser.get(base)  # anonymous; the page stays open from here on
    wait_for(lambda: routine.study_uid in rows(browser), timeout=30, what="routine study listed")
    uid, files = stat_ct_study(tmp_path / "ct")
    marker = browser.execute_script("window.__no_reload = 1; return window.__no_reload;")
    dcmtk("storescu", "-aec", "PACSTRIAGE", "127.0.0.1", service["port"], *files)
    sent = time.monotonic()
    wait_for(lambda: rows(browser)[:1] == [uid], timeout=30, interval=0.05, what="STAT study at the top")
    seconds = time.monotonic() - sent
    print(f"STAT study at the top of the open worklist {seconds:.1f} s after storescu returned")
    assert browser.execute_script("return window.__no_reload;") == marker, "updated live, not reloaded"
    wait_for(lambda: "misplaced_screw" in top_text(browser), timeout=5, what="flag shown")
    assert "STAT" in top_text(browser)
    # Anonymous: UIDs, priorities and flags; never the patient, the accession or the text.
    page = browser.page_source
    assert PATIENT not in page and "PHANTOM" not in page and "ACC-CS" not in page
    shot(browser, "worklist-anonymous")
    browser.get(base + "?flag=misplaced_screw")  # filters
    assert rows(browser) == [uid]
    browser.get(base + "?priority=ROUTINE")
    assert rows(browser) == [routine.study_uid]
    browser.get(base + f"study/{uid}")
    page = browser.page_source
    assert "misplaced_screw" in page and "STAT" in page
    assert PATIENT not in page and "PHANTOM" not in page and "anesthésie" not in page
    assert not browser.find_elements("id", "key-image")
    browser.get(base + f"study/{uid}/key.png")
    assert "login needed" in browser.page_source
    browser.get(base + "operator")
    assert "/console/login" in browser.current_url


def test_logged_in_study_view_highlights_the_evidence_and_loads_the_key_image(service, browser):
    base = service["url"]
    login(browser, base)
    browser.get(base)
    wait_for(lambda: rows(browser), timeout=10, what="worklist rows")
    assert "ACC-CS-STAT" in top_text(browser) and "webhook" in top_text(browser)  # identifiers and delivery state when logged in
    shot(browser, "worklist")
    from selenium.webdriver.common.keys import Keys

    browser.find_element("tag name", "body").send_keys("j")  # keyboard: select the first row, open it
    browser.switch_to.active_element.send_keys(Keys.ENTER)
    wait_for(lambda: "/console/study/" in browser.current_url, timeout=10, what="study opened with the keyboard")
    assert PATIENT in browser.find_element("id", "patient").text
    marks = browser.find_elements("css selector", "section.text .field mark.affirmed.flagged")
    assert any(m.text == "anesthésie en selle" for m in marks), [m.text for m in marks]
    negated = browser.find_elements("css selector", "section.text .field mark.negated")
    assert [m.text for m in negated] == ["fièvre"], "the negated mention is marked, and raised no flag"
    wait_for(lambda: browser.execute_script(
        "var i = document.getElementById('key-image'); return i && i.complete && i.naturalWidth > 200;"),
        timeout=30, what="key image loaded")
    caption = browser.find_element("css selector", "section.key figcaption").text
    assert "medial breach" in caption and "grade" in caption
    browser.set_window_size(1280, 1100)
    shot(browser, "study")  # evidence and key image side by side (docs/console-study.png)
    browser.set_window_size(1280, 900)


def test_operator_replays_a_dead_letter(service, browser, hook):
    base = service["url"]
    browser.get(base + "operator")
    if "/login" in browser.current_url:
        login(browser, base + "")
        browser.get(base + "operator")

    def dead():
        browser.refresh()
        return browser.find_elements("css selector", "#dead-letters tr[data-uid]")

    wait_for(lambda: len(dead()) >= 2, timeout=40, what="dead letters for the refused webhook")
    shot(browser, "operator")
    hook.status = 200  # the destination is back
    before = len(hook.delivered())
    browser.find_element("css selector", "#dead-letters tr[data-uid] button.replay").click()
    wait_for(lambda: "replayed" in text_of(browser, "message"), timeout=10, what="replayed")
    wait_for(lambda: len(hook.delivered()) > before, timeout=20, what="the replayed entry delivered")
    assert len(browser.find_elements("css selector", "#dead-letters tr[data-uid]")) == 1
    # The replay is in the audit trail, with the user.
    out = subprocess.run([sys.executable, "-m", "agent.cli", "audit", "export", "--data-dir",
                          str(service["root"] / "data")], capture_output=True, text=True, timeout=30).stdout
    assert '"action":"replay"' in out and '"user":"alice"' in out and '"event":"console_view"' in out
    assert PATIENT not in out
