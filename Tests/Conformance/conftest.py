"""Shared fixtures of the conformance tier: the server under test (started by
scripts/conformance.sh, its address in TASKM_BASE_URL), where artifacts go, and headless
Chromium (Debian's chromium and chromium-driver, driven by selenium, nothing downloaded)."""
import functools
import http.server
import os
import pathlib
import threading

import pytest


@pytest.fixture(scope="session")
def base_url() -> str:
    url = os.environ.get("TASKM_BASE_URL")
    if not url:
        pytest.fail("TASKM_BASE_URL is not set: run this tier with `make conformance`")
    return url.rstrip("/")


@pytest.fixture(scope="session")
def artifacts() -> pathlib.Path:
    path = pathlib.Path(os.environ.get("TASKM_ARTIFACTS", "artifacts/conformance"))
    path.mkdir(parents=True, exist_ok=True)
    return path


UI = pathlib.Path(__file__).parent / "ui"
CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
CHROMEDRIVER = os.environ.get("CHROMEDRIVER", "/usr/bin/chromedriver")


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


def serve_pages(ports):
    """Serves ui/ on 127.0.0.1 at each port, as a development server would; the servers."""
    servers = []
    for port in ports:
        handler = functools.partial(QuietHandler, directory=str(UI))
        server = http.server.ThreadingHTTPServer(("127.0.0.1", port), handler)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
    return servers


def stop_pages(servers):
    for server in servers:
        server.shutdown()
        server.server_close()


def start_chromium(logging=False):
    """Headless Chromium through Debian's chromedriver; Selenium Manager must not download."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    os.environ["SE_OFFLINE"] = "true"
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1000,1000"):
        options.add_argument(argument)
    if logging:
        options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
