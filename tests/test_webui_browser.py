"""The web UI in a real browser (headless Chromium from Debian, driven by Selenium through
chromedriver) against two real daemons on loopback: logging in with the link, pairing the two
through the pages, a write arriving live, a conflict settled by a click, a record's history. Each
page is saved as a PNG where CI keeps it: $CI_ARTIFACTS_DIR/screenshots when CI names a folder
for its artifacts, else $P2PSYNC_SCREENSHOTS, else test-screenshots/ at the repository root."""

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.daemons import REPO, DaemonProcess, running, wait_for

pytestmark = pytest.mark.slow

CHROMIUM, CHROMEDRIVER = shutil.which("chromium"), shutil.which("chromedriver")
try:
    from selenium import webdriver
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.remote.webdriver import WebDriver
    from selenium.webdriver.support import expected_conditions as shows
    from selenium.webdriver.support.wait import WebDriverWait
except ImportError:  # pragma: no cover - the test extra installs it
    webdriver = None  # type: ignore[assignment]

if webdriver is None:
    pytest.skip("selenium is not installed (pip install -e '.[test]')", allow_module_level=True)
if CHROMIUM is None or CHROMEDRIVER is None:
    pytest.skip(
        "needs Debian's chromium and chromium-driver (apt-get install chromium chromium-driver)",
        allow_module_level=True,
    )

WAIT_SECONDS = 20
# Everything but loopback goes to a proxy that is not there: the browser cannot reach the network
# even if one of its features tried (the flags below turn off those known to).
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-default-apps",
    "--disable-domain-reliability",
    "--disable-client-side-phishing-detection",
    "--disable-dev-shm-usage",
    "--proxy-server=http://127.0.0.1:9",
    "--window-size=1280,900",
]


def screenshots() -> Path:
    artifacts = os.environ.get("CI_ARTIFACTS_DIR")
    if artifacts:
        folder = Path(artifacts) / "screenshots"
    else:
        folder = Path(os.environ.get("P2PSYNC_SCREENSHOTS") or REPO / "test-screenshots")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@pytest.fixture
def browser(tmp_path: Path) -> Iterator["WebDriver"]:
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in [*CHROMIUM_FLAGS, f"--user-data-dir={tmp_path / 'chromium-profile'}"]:
        options.add_argument(flag)
    service = webdriver.ChromeService(executable_path=str(CHROMEDRIVER))
    driver = webdriver.Chrome(options=options, service=service)
    try:
        yield driver
    finally:
        driver.quit()


def wait(driver: "WebDriver"):
    return WebDriverWait(driver, WAIT_SECONDS)


def open_live(driver: "WebDriver", url: str) -> None:
    """Open a page and wait until its event stream is connected, so no news is missed."""
    driver.get(url)
    wait(driver).until(lambda d: d.find_element(By.TAG_NAME, "body").get_attribute("data-live"))


def snap(driver: "WebDriver", name: str) -> None:
    assert driver.save_screenshot(str(screenshots() / f"{name}.png"))


def log_in(driver: "WebDriver", daemon: DaemonProcess) -> str:
    """Follow a fresh `ui_link`; the UI's base URL."""
    url = daemon.call("ui_link")["url"]
    driver.get(url)
    wait(driver).until(shows.presence_of_element_located((By.ID, "devices")))
    return url.split("/login")[0]


def test_pair_two_daemons_see_a_write_live_and_settle_a_conflict(tmp_path, browser):
    kitchen = DaemonProcess(tmp_path, "kitchen", ui_port=0)
    den = DaemonProcess(tmp_path, "den", ui_port=0)
    with running(kitchen, den):
        at_kitchen = log_in(browser, kitchen)
        snap(browser, "login-overview-alone")
        # the keyboard's first stop skips the navigation to the page's content
        browser.find_element(By.TAG_NAME, "body").send_keys(Keys.TAB)
        assert browser.switch_to.active_element.text == "Skip to content"
        browser.switch_to.active_element.send_keys(Keys.ENTER)
        assert browser.switch_to.active_element.get_attribute("id") == "main"

        # Add a device: the code, large and as a QR code, and the pairing's progress, live
        browser.get(f"{at_kitchen}/add")
        browser.find_element(By.CSS_SELECTOR, "button[value=start]").click()
        code = wait(browser).until(shows.presence_of_element_located((By.ID, "pairing-code"))).text
        open_live(browser, f"{at_kitchen}/add")
        assert browser.find_element(By.CSS_SELECTOR, ".qr svg")
        snap(browser, "add-device")
        kitchen_tab = browser.current_window_handle

        browser.switch_to.new_window("tab")
        at_den = log_in(browser, den)
        browser.get(f"{at_den}/join")
        browser.find_element(By.ID, "code").send_keys(code)
        browser.find_element(By.ID, "address").send_keys(kitchen.address)
        browser.find_element(By.CSS_SELECTOR, "form.stacked button[type=submit]").click()
        joined = wait(browser).until(shows.presence_of_element_located((By.ID, "joined")))
        assert "kitchen" in joined.text
        snap(browser, "join")

        browser.switch_to.window(kitchen_tab)
        wait(browser).until(
            shows.text_to_be_present_in_element((By.ID, "pairing-state"), "Paired with den")
        )
        snap(browser, "add-device-paired")

        # the overview shows both devices, online, without a reload
        open_live(browser, f"{at_kitchen}/")
        wait(browser).until(
            lambda d: "online" in d.find_element(By.CSS_SELECTOR, ".card:nth-child(2)").text
        )

        # a write on the den arrives on the kitchen's data page as it happens
        open_live(browser, f"{at_kitchen}/data?share=default&collection=notes")
        den.call("put", collection="notes", key="shopping", value={"milk": 2, "note": "<b>oat</b>"})
        row = wait(browser).until(
            shows.presence_of_element_located((By.CSS_SELECTOR, "tr[data-key=shopping]"))
        )
        assert "<b>oat</b>" in row.text  # shown as text, not as markup
        snap(browser, "data")
        open_live(browser, f"{at_kitchen}/")
        snap(browser, "overview")

        # a conflict: both write one key while apart, then meet again
        den.stop()
        kitchen.call("put", collection="notes", key="colour", value="blue")
        den.peers = []
        den.write_config()
        den.start()
        den.call("put", collection="notes", key="colour", value="green")
        open_live(browser, f"{at_kitchen}/conflicts")
        den.peers = [kitchen.address]
        den.write_config()
        den.call("reload")
        keep_den = wait(browser).until(
            shows.element_to_be_clickable(
                (By.XPATH, "//button[contains(., 'Keep this version') and contains(., 'by den')]")
            )
        )
        snap(browser, "conflicts")
        conflicts_tab = browser.current_window_handle
        browser.switch_to.new_window("tab")  # the record's history shows both sides as current
        browser.get(f"{at_kitchen}/record?collection=notes&key=colour")
        assert len(browser.find_elements(By.CSS_SELECTOR, "ol.history > li.winner")) == 1
        assert len(browser.find_elements(By.CSS_SELECTOR, "ol.history > li.current")) == 1
        assert "in conflict" in browser.find_element(By.CSS_SELECTOR, ".conflicted").text
        snap(browser, "history-conflict")
        browser.close()
        browser.switch_to.window(conflicts_tab)
        keep_den.click()
        wait(browser).until(shows.presence_of_element_located((By.ID, "no-conflicts")))
        record = kitchen.call("get", collection="notes", key="colour")
        assert (record["value"], record["conflict"]) == ("green", False)
        settled = lambda: not den.call("get", collection="notes", key="colour")["conflict"]  # noqa: E731
        wait_for(settled, "the den to hear the conflict was settled", den, kitchen)

        # the record's history: from its row in the data browser, by keyboard
        browser.get(f"{at_kitchen}/data?share=default&collection=notes")
        link = browser.find_element(By.CSS_SELECTOR, "tr[data-key=colour] th a")
        link.send_keys(Keys.ENTER)
        wait(browser).until(shows.presence_of_element_located((By.CSS_SELECTOR, "ol.history")))
        versions = browser.find_elements(By.CSS_SELECTOR, "ol.history > li")
        writers = [v.find_element(By.CSS_SELECTOR, ".writer strong").text for v in versions]
        assert writers == ["kitchen", "den", "kitchen"]  # the pick, den's green, kitchen's blue
        assert "shown on every device" in versions[0].text and "green" in versions[0].text
        assert [v.text.count("replaced") for v in versions[1:]] == [1, 1]
        assert "blue" in versions[2].text
        snap(browser, "history")

        kitchen.call("share_create", share="parents")
        kitchen.call("share_add", share="parents", device=den.device_id)
        browser.get(f"{at_kitchen}/shares")
        members = browser.find_element(By.CSS_SELECTOR, "table tbody").text
        assert "kitchen (this device)" in members and "den" in members
        for page in ("shares", "doctor"):
            browser.get(f"{at_kitchen}/{page}")
            snap(browser, page)
        browser.set_window_size(390, 844)  # a phone
        browser.get(f"{at_kitchen}/")
        snap(browser, "overview-phone")
