"""The web page as a person uses it: ``python app.py`` in a subprocess, driven in headless Chromium (Selenium with
Debian's chromium and chromium-driver; ``run_tests.sh`` installs them).

- upload the bundled example, pick the ``cass`` preset, press Separate: the players come, and a stem downloaded from
  its player equals the command line's; the time from the click to the players is printed, and a screenshot saved
  (``TUSS_APP_SCREENSHOT=docs/app.png`` also writes it there: the picture in docs/app.md);
- a file that is not audio gives a readable message, and the page then separates the next file;
- stopping the server (SIGTERM) deletes every file it wrote, and it wrote nothing in its working folder.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from pathlib import Path

import pytest

from tests.app.conftest import EXAMPLE, assert_same_audio

pytest.importorskip("gradio", reason="the web page needs gradio (pip install -r requirements.txt)")
webdriver = pytest.importorskip("selenium.webdriver", reason="the browser tests need selenium (pip)")
CHROMIUM, CHROMEDRIVER = shutil.which("chromium"), shutil.which("chromedriver")
if not (CHROMIUM and CHROMEDRIVER):
    pytest.skip("the browser tests need chromium and chromedriver (apt-get install chromium chromium-driver)",
                allow_module_level=True)

from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

#: Chromium without a sandbox (root in CI) and without any connection of its own to the internet
FLAGS = ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-dev-shm-usage", "--window-size=1400,1700"]
WAIT = 60  # seconds: the longest any step may take


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    """Headless Chromium with a fresh profile; downloads go to ``browser.downloads``."""
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    profile, downloads = tmp_path_factory.mktemp("profile"), tmp_path_factory.mktemp("downloads")
    for flag in (*FLAGS, f"--user-data-dir={profile}"):
        options.add_argument(flag)
    options.add_experimental_option("prefs", {"download.default_directory": str(downloads),
                                              "download.prompt_for_download": False})
    driver = webdriver.Chrome(service=webdriver.ChromeService(CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(WAIT)
    driver.downloads = downloads
    try:
        yield driver
    finally:
        driver.quit()


def wait(driver, condition, timeout: float = WAIT, poll: float = 0.05):
    return WebDriverWait(driver, timeout, poll_frequency=poll).until(condition)


def open_page(driver, url: str) -> None:
    driver.get(url)
    wait(driver, lambda d: d.find_elements(By.CSS_SELECTOR, "#audio-input input[type=file]"))


def upload(driver, path: Path) -> None:
    """Choose ``path`` in the mixture's upload box and wait until the page holds it."""
    driver.find_element(By.CSS_SELECTOR, "#audio-input input[type=file]").send_keys(str(path))
    wait(driver, lambda d: d.find_elements(By.CSS_SELECTOR, "#audio-input button[aria-label=Clear]"))


def pick_preset(driver, name: str) -> None:
    driver.find_element(By.CSS_SELECTOR, "#preset input[role=combobox]").click()
    option = wait(driver, lambda d: [o for o in d.find_elements(By.CSS_SELECTOR, "ul[role=listbox] li")
                                     if o.get_attribute("aria-label") == name])
    option[0].click()


def prompts(driver) -> str:
    return driver.find_element(By.CSS_SELECTOR, "#prompts textarea, #prompts input").get_attribute("value")


def players(driver) -> dict[str, str]:
    """The stem players shown, each with its file's address: ``{label: download href}`` (ready once the player
    knows the file's duration)."""
    found = {}
    for i in range(8):
        block = driver.find_elements(By.ID, f"stem-{i}")
        links = block[0].find_elements(By.CSS_SELECTOR, "a[data-testid=download-link]") if block else []
        times = block[0].find_elements(By.CSS_SELECTOR, "time#duration") if block else []
        if links and links[0].is_displayed() and times and times[0].text not in ("", "0:00"):
            label = block[0].find_element(By.CSS_SELECTOR, "[data-testid=block-label]").text.strip()
            found[label] = links[0].get_attribute("href")
    return found


def separate(driver, expected: list[str]) -> float:
    """Press Separate and wait for the players of ``expected`` (and no others); returns the seconds it took."""
    start = time.perf_counter()
    driver.find_element(By.ID, "separate").click()
    wait(driver, lambda d: list(players(d)) == expected)
    return time.perf_counter() - start


def test_separate_the_bundled_example_and_download_a_stem(app_server, browser, cli_stems, tmp_path, capsys):
    open_page(browser, app_server.url)
    upload(browser, EXAMPLE)
    pick_preset(browser, "se")  # the preset fills the prompt box
    wait(browser, lambda d: prompts(d) == "speech sfxbg")
    pick_preset(browser, "cass")
    wait(browser, lambda d: prompts(d) == "speech sfxbg musicbg")
    seconds = separate(browser, ["speech0", "sfxbg1", "musicbg2"])
    status = " ".join(browser.find_element(By.ID, "status").text.split())
    assert "3 stems of demo_cass.wav by tuss.demo (speech0, sfxbg1, musicbg2; in one pass; mono)" in status
    pictures = [browser.find_element(By.CSS_SELECTOR, f"#{i} img").get_attribute("src")
                for i in ("mix-spectrogram", "stem-spectrogram-0", "stem-spectrogram-1", "stem-spectrogram-2")]
    assert [Path(p).name for p in pictures] == ["mix.png", "speech0.png", "sfxbg1.png", "musicbg2.png"]
    zips = [a.get_attribute("href") for a in browser.find_elements(By.CSS_SELECTOR, "#archive a[href]")]
    assert zips and all(Path(z).name == "demo_cass_separated.zip" for z in zips)

    link = browser.find_element(By.CSS_SELECTOR, "#stem-1 a[data-testid=download-link]")
    link.find_element(By.TAG_NAME, "button").click()  # the player's download button
    got = browser.downloads / "sfxbg1.wav"
    wait(browser, lambda d: got.is_file() and not list(browser.downloads.glob("*.crdownload")))
    assert_same_audio(got, cli_stems["cass"]["sfxbg1"], "sfxbg1 downloaded in the browser")

    shot = tmp_path / "app.png"
    browser.save_screenshot(str(shot))
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    if os.environ.get("TUSS_APP_SCREENSHOT"):
        shutil.copy(shot, os.environ["TUSS_APP_SCREENSHOT"])
    with capsys.disabled():
        print(f"\n[web page] Separate -> players for {EXAMPLE.name}: {seconds:.2f} s; screenshot: {shot}")


def test_a_bad_file_shows_the_message_and_the_page_separates_the_next(app_server, browser, cli_stems, tmp_path):
    open_page(browser, app_server.url)
    bad = Path(tempfile.mkdtemp(dir=tmp_path)) / "notes.wav"
    bad.write_text("these are notes, not audio\n" * 40)
    upload(browser, bad)
    browser.find_element(By.ID, "separate").click()
    toast = wait(browser, lambda d: [t for t in d.find_elements(By.CSS_SELECTOR, "[data-testid=toast-body]")
                                     if "not a readable audio file" in t.text])
    message = toast[0].text
    assert "notes.wav is not a readable audio file" in message
    assert str(app_server.cache) not in message and "Traceback" not in message
    assert players(browser) == {}
    toast[0].find_element(By.CSS_SELECTOR, "button").click()  # close it

    browser.find_element(By.CSS_SELECTOR, "#audio-input button[aria-label=Clear]").click()
    wait(browser, lambda d: d.find_elements(By.CSS_SELECTOR, "#audio-input input[type=file]"))
    upload(browser, EXAMPLE)
    pick_preset(browser, "se")
    wait(browser, lambda d: prompts(d) == "speech sfxbg")
    separate(browser, ["speech0", "sfxbg1"])
    assert not browser.find_elements(By.CSS_SELECTOR, "[data-testid=toast-body]")


def test_stopping_the_server_deletes_its_files(app_server):
    assert any(p.is_file() for p in app_server.cache.rglob("*"))  # the uploads and outputs of the tests above
    assert app_server.stop() == 0
    assert [p for p in app_server.cache.rglob("*") if p.is_file()] == []
    assert list(app_server.cwd.iterdir()) == []  # nothing written where it was started
    assert "Traceback" not in "".join(app_server.stderr)
    assert "error: notes.wav is not a readable audio file" in "".join(app_server.stderr)  # the log's one line
