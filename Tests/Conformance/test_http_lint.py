"""HTTP linters nobody here wrote: redbot over every GET route (it also tries HEAD, conditional
and ranged requests and compression on its own), and httplint over the raw bytes of the other
answers (writes, errors, preflights, parse-level rejections). Fails on any BAD or WARN note."""
import json
import os
import socket
import subprocess
import sys
import urllib.parse

import time

import pytest
import requests
from httplint import HttpRequestLinter, HttpResponseLinter

BIN = os.path.dirname(sys.executable)
FAILING_LEVELS = {"BAD", "WARN"}


def redbot_notes(url):
    run = subprocess.run([os.path.join(BIN, "redbot"), "-o", "har", url], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    notes = []
    for entry in json.loads(run.stdout)["log"]["entries"]:
        notes += [note for note in entry.get("_red_messages", []) if note["level"] in FAILING_LEVELS]
    return notes


@pytest.fixture(scope="module")
def task_id(base_url):
    response = requests.post(f"{base_url}/api/tasks", json={"title": "linted", "description": "x"}, timeout=10)
    assert response.status_code == 201
    return response.json()["id"]


@pytest.mark.parametrize("path", [
    "/api/tasks",
    "/api/tasks?sort_by=created_at&sort_order=desc",
    "/api/tasks/{id}",
    "/api/tasks/999999999",
    "/api/settings",
    "/api/openapi.json",
    "/api/openapi.yaml",
    "/healthz",
    "/readyz",
    "/metrics",
    "/no/such/path",
])
def test_redbot_finds_nothing_wrong_with_get(base_url, task_id, path):
    assert redbot_notes(base_url + path.format(id=task_id)) == []


def raw_exchange(base_url, request: bytes) -> bytes:
    """Sends one raw request and reads the answer to the end (each request says Connection: close)."""
    address = urllib.parse.urlsplit(base_url)
    with socket.create_connection((address.hostname, address.port), timeout=10) as sock:
        sock.sendall(request)
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    return answer


def request_bytes(method, path, body=b"", headers=()):
    lines = [f"{method} {path} HTTP/1.1", "Host: localhost", "Connection: close", *headers]
    if not any(header.lower().startswith("content-length:") for header in headers) and (body or method in ("POST", "PUT")):
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def parse_message(raw: bytes):
    """(top line parts, header fields, body) of a raw HTTP/1.1 message."""
    head, _, body = raw.partition(b"\r\n\r\n")
    top, *fields = head.split(b"\r\n")
    return top.split(b" ", 2), [tuple(part.strip() for part in field.split(b":", 1)) for field in fields], body


def httplint_notes(request: bytes, answer: bytes):
    """httplint's BAD and WARN notes on `answer`, linted as the answer to `request` (the method
    and a preflight's headers change what is right), as (note, summary) pairs."""
    (method, target, version), request_fields, request_body = parse_message(request)
    request_linter = None
    if all(len(field) == 2 for field in request_fields):  # else the request is the malformed one
        request_linter = HttpRequestLinter()
        request_linter.process_request_topline(method, target, version)
        request_linter.process_headers(request_fields)
        request_linter.feed_content(request_body)
        request_linter.finish_content(True)
    (version, status, phrase), fields, body = parse_message(answer)
    linter = HttpResponseLinter(_related=request_linter, start_time=time.time())
    linter.process_response_topline(version, status, phrase)
    linter.process_headers(fields)
    linter.feed_content(body)
    linter.finish_content(True)
    return [(type(note).__name__, note.summary) for note in linter.notes if note.level.name.upper() in FAILING_LEVELS]


JSON = ("Content-Type: application/json",)
ANSWERS = {
    "create 201": ("POST", "/api/tasks", b'{"title":"linted"}', JSON),
    "update 200": ("PUT", "/api/tasks/{id}", b'{"status":"DONE"}', JSON),
    "settings 200": ("PUT", "/api/settings", b'{"dark_mode":false}', JSON),
    "invalid 400": ("POST", "/api/tasks", b'{"title":""}', JSON),
    "not JSON 400": ("POST", "/api/tasks", b"{", JSON),
    "media type 415": ("POST", "/api/tasks", b"title=x", ("Content-Type: text/plain",)),
    "method 405": ("PATCH", "/api/tasks", b"", ()),
    "missing 404": ("DELETE", "/api/tasks/999999999", b"", ()),
    "problem details 404": ("GET", "/api/tasks/999999999", b"", ("Accept: application/problem+json",)),
    "options 204": ("OPTIONS", "/api/tasks", b"", ()),
    "preflight 204": ("OPTIONS", "/api/tasks", b"", ("Origin: http://localhost:5173", "Access-Control-Request-Method: POST")),
    "header too large 431": ("GET", "/api/tasks", b"", ("X-Padding: " + "a" * 20000,)),
    "body too large 413": ("POST", "/api/tasks", b"", (*JSON, "Content-Length: 1100000")),
    "malformed 400": ("GET", "/api/tasks", b"", ("Bad Header Line",)),
    "delete 204": ("DELETE", "/api/tasks/{id}", b"", ()),
}


@pytest.mark.parametrize("name", list(ANSWERS))
def test_httplint_finds_nothing_wrong_with_answer(base_url, task_id, name):
    method, path, body, headers = ANSWERS[name]
    request = request_bytes(method, path.format(id=task_id), body, headers)
    answer = raw_exchange(base_url, request)
    assert answer.startswith(b"HTTP/1.1 " + name.rsplit(" ", 1)[1].encode()), answer[:200]
    # httplint warns on every 400 ("the server didn't understand the request"): for these
    # requests that is the right answer, so that note alone is expected.
    expected = {"STATUS_BAD_REQUEST"} if name.endswith(" 400") else set()
    assert [note for note in httplint_notes(request, answer) if note[0] not in expected] == []
