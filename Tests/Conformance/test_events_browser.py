"""Live updates in a real browser: headless Chromium (Debian's chromium and chromium-driver,
driven by selenium) opens ui/events.html, which subscribes to one replica's /api/events with
EventSource, and shows a task created through the other replica; from an origin that is not
allowed the page receives nothing. Needs TASKM_BASE_URL and TASKM_OTHER_URL (two servers on
one database: scripts/conformance.sh, or scripts/test.sh when Chromium is installed)."""
import functools
import http.server
import os
import pathlib
import threading
import time
import uuid

import pytest
import requests
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

UI = pathlib.Path(__file__).parent / "ui"
ALLOWED_PORT = 5173  # http://localhost:5173 is in CORS_ORIGINS' default
DISALLOWED_PORT = 4174  # http://localhost:4174 is not
CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
CHROMEDRIVER = os.environ.get("CHROMEDRIVER", "/usr/bin/chromedriver")


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def other_url():
    url = os.environ.get("TASKM_OTHER_URL")
    if not url:
        pytest.fail("TASKM_OTHER_URL (a second server on the same database) is not set")
    return url.rstrip("/")


@pytest.fixture(scope="module")
def event_pages():
    servers = []
    for port in (ALLOWED_PORT, DISALLOWED_PORT):
        handler = functools.partial(QuietHandler, directory=str(UI))
        try:
            server = http.server.ThreadingHTTPServer(("127.0.0.1", port), handler)
        except OSError:
            continue  # already served by the other browser test's fixture in this run
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
    yield
    for server in servers:
        server.shutdown()
        server.server_close()


@pytest.fixture(scope="module")
def event_browser(event_pages):
    os.environ["SE_OFFLINE"] = "true"  # Selenium Manager must not download anything
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1000,1000"):
        options.add_argument(argument)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    yield driver
    driver.quit()


def items(browser):
    return [(item.get_attribute("data-event"), item.text) for item in browser.find_elements(By.CSS_SELECTOR, "#events li")]


def test_a_task_created_through_one_replica_shows_in_a_page_subscribed_to_the_other(event_browser, base_url, other_url, artifacts):
    event_browser.get(f"http://localhost:{ALLOWED_PORT}/events.html?api={base_url}")
    WebDriverWait(event_browser, 20).until(lambda d: d.find_element(By.ID, "state").text == "open")
    title = f"live {uuid.uuid4().hex[:8]}"
    created = requests.post(f"{other_url}/api/tasks", json={"title": title}, timeout=10)
    assert created.status_code == 201
    started = time.monotonic()
    WebDriverWait(event_browser, 10).until(lambda d: any(title in text for _, text in items(d)))
    event_browser.save_screenshot(str(artifacts / "events-allowed.png"))
    assert ("task.created", created.text.strip()) in items(event_browser), items(event_browser)
    assert time.monotonic() - started < 5


def test_a_page_from_an_origin_that_is_not_allowed_receives_nothing(event_browser, base_url, other_url, artifacts):
    event_browser.get(f"http://localhost:{DISALLOWED_PORT}/events.html?api={base_url}")
    time.sleep(2)
    title = f"unseen {uuid.uuid4().hex[:8]}"
    assert requests.post(f"{other_url}/api/tasks", json={"title": title}, timeout=10).status_code == 201
    time.sleep(3)
    event_browser.save_screenshot(str(artifacts / "events-disallowed.png"))
    assert items(event_browser) == []
    assert event_browser.find_element(By.ID, "state").text != "open"
