"""Live updates in a real browser: headless Chromium (Debian's chromium and chromium-driver,
driven by selenium) opens ui/events.html, which subscribes to one replica's /api/events with
EventSource, and shows a task created through the other replica; from an origin that is not
allowed the page receives nothing. Needs TASKM_BASE_URL and TASKM_OTHER_URL (two servers on
one database: scripts/conformance.sh, or scripts/test.sh when Chromium is installed)."""
import os
import time
import uuid

import pytest
import requests
from conftest import serve_pages, start_chromium, stop_pages
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

ALLOWED_PORT = 5173  # http://localhost:5173 is in CORS_ORIGINS' default
DISALLOWED_PORT = 4174  # http://localhost:4174 is not


@pytest.fixture(scope="module")
def other_url():
    url = os.environ.get("TASKM_OTHER_URL")
    if not url:
        pytest.fail("TASKM_OTHER_URL (a second server on the same database) is not set")
    return url.rstrip("/")


@pytest.fixture(scope="module")
def event_browser():
    servers = serve_pages((ALLOWED_PORT, DISALLOWED_PORT))
    driver = start_chromium()
    yield driver
    driver.quit()
    stop_pages(servers)


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
