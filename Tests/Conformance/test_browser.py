"""The React UI's calls in a real browser: headless Chromium (Debian's chromium and
chromium-driver, driven by selenium) loads ui/index.html, which makes the UI's calls with fetch,
from each allowed development origin and from one that is not allowed. Screenshots are kept in
the artifacts folder."""
import uuid

import pytest
import requests
from conftest import serve_pages, start_chromium, stop_pages
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

ALLOWED_PORTS = (5173, 3000)  # http://localhost:5173 and :3000 are in CORS_ORIGINS' default
DISALLOWED_PORT = 4173  # http://localhost:4173 is not
# What the page's log holds after a run from an allowed origin, call by call.
EXPECTED_CALLS = [
    ("GET", "/settings", "200"),
    ("GET", "/tasks?sort_by=created_at&sort_order=desc", "200"),
    ("PUT", "/settings", "200"),
    ("POST", "/tasks", "201"),
    ("GET", "/tasks?sort_by=created_at&sort_order=desc", "200"),
    ("PUT", "/tasks/{edited}", "200"),
    ("GET", "/tasks?sort_by=created_at&sort_order=desc", "200"),
    ("POST", "/tasks", "201"),
    ("DELETE", "/tasks/{edited}", "204"),
    ("GET", "/tasks?sort_by=created_at&sort_order=desc", "200"),
]


@pytest.fixture(scope="module")
def page_servers():
    """The test page served on 127.0.0.1 at each port, as a development server would."""
    servers = serve_pages((*ALLOWED_PORTS, DISALLOWED_PORT))
    yield
    stop_pages(servers)


@pytest.fixture(scope="module")
def browser(page_servers):
    driver = start_chromium(logging=True)
    yield driver
    driver.quit()


def run_page(browser, port, base_url, title):
    browser.get(f"http://localhost:{port}/index.html?api={base_url}&title={title}")
    WebDriverWait(browser, 30).until(lambda d: d.find_element(By.ID, "state").text == "done")
    calls = [
        (item.get_attribute("data-method"), item.get_attribute("data-path"), item.get_attribute("data-status"))
        for item in browser.find_elements(By.CSS_SELECTOR, "#log li")
    ]
    return calls, browser.find_element(By.ID, "state")


@pytest.mark.parametrize("port", ALLOWED_PORTS)
def test_ui_calls_succeed_from_allowed_origin(browser, base_url, artifacts, port):
    title = f"browser-{port}-{uuid.uuid4().hex[:8]}"
    calls, state = run_page(browser, port, base_url, title)
    browser.save_screenshot(str(artifacts / f"ui-localhost-{port}.png"))

    edited = state.get_attribute("data-edited-id")
    kept = state.get_attribute("data-kept-id")
    assert edited and kept, calls
    expected = [(method, path.format(edited=edited), status) for method, path, status in EXPECTED_CALLS]
    assert calls == expected
    # What the page shows, read back from the DOM.
    assert browser.find_element(By.ID, "dark-mode").text == "true"
    assert state.get_attribute("data-edited-text") == f"#{edited} {title} (edited) [IN_PROGRESS]"
    assert state.get_attribute("data-edited-description") == ""
    shown = [item.text for item in browser.find_elements(By.CSS_SELECTOR, "#tasks li")]
    assert shown[0] == f"#{kept} {title} (kept) [DONE]", "newest first"
    assert not any(text.startswith(f"#{edited} ") for text in shown)
    # And what the server holds.
    assert requests.get(f"{base_url}/api/tasks/{kept}", timeout=10).json()["description"] == "stays"
    assert requests.get(f"{base_url}/api/tasks/{edited}", timeout=10).status_code == 404
    errors = [entry for entry in browser.get_log("browser") if entry["level"] == "SEVERE"]
    assert errors == []


def test_ui_calls_are_blocked_from_other_origin(browser, base_url, artifacts):
    title = f"browser-{DISALLOWED_PORT}-{uuid.uuid4().hex[:8]}"
    calls, state = run_page(browser, DISALLOWED_PORT, base_url, title)
    browser.save_screenshot(str(artifacts / f"ui-localhost-{DISALLOWED_PORT}-blocked.png"))

    assert calls, "the page made no calls"
    assert all(status == "blocked" for _, _, status in calls), calls
    assert browser.find_element(By.ID, "dark-mode").text == "unknown"
    # The writes never reached the server: their preflights got no CORS headers.
    titles = [task["title"] for task in requests.get(f"{base_url}/api/tasks", timeout=10).json()]
    assert not any(title in existing for existing in titles)
    assert any("CORS" in entry["message"] for entry in browser.get_log("browser"))
