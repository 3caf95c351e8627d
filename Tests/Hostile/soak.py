#!/usr/bin/env python3
"""Soak: the UI's calls for SOAK_SECONDS against a running server; fails on any 5xx or when
the server's resident memory at the end is more than 10% above its value after warm-up.

usage: soak.py PORT SERVER_PID SECONDS [CLIENTS]
"""
import http.client
import json
import sys
import threading
import time

port, pid, seconds = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3])
clients = int(sys.argv[4]) if len(sys.argv) > 4 else 8
warmup = min(60.0, seconds / 5)
lock = threading.Lock()
latencies, errors, statuses = [], [], {}


def rss():
    with open(f"/proc/{pid}/status") as f:
        return next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmRSS:"))


def call(connection, method, path, body=None):
    headers = {"Content-Type": "application/json"} if body is not None else {}
    started = time.monotonic()
    connection.request(method, path, body=None if body is None else json.dumps(body), headers=headers)
    response = connection.getresponse()
    data = response.read()
    elapsed = time.monotonic() - started
    with lock:
        latencies.append(elapsed)
        statuses[response.status] = statuses.get(response.status, 0) + 1
        if response.status >= 500:
            errors.append(f"{method} {path}: {response.status} {data[:200]!r}")
    return response.status, data


def client(index, stop):
    """One browser: load, then create / edit / delete, listing after each as the UI does."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    listing = "/api/tasks?sort_by=created_at&sort_order=desc"
    call(connection, "GET", "/api/settings")
    call(connection, "GET", listing)
    n = 0
    while not stop.is_set():
        n += 1
        status, data = call(connection, "POST", "/api/tasks", {"title": f"soak {index}-{n}", "description": None, "status": "TODO"})
        call(connection, "GET", listing)
        if status == 201:
            task = json.loads(data)
            call(connection, "PUT", f"/api/tasks/{task['id']}", {"title": task["title"], "description": "", "status": "IN_PROGRESS"})
            call(connection, "GET", listing)
            if n % 2 == 0:
                call(connection, "DELETE", f"/api/tasks/{task['id']}")
                call(connection, "GET", listing)
        if n % 10 == 0:
            call(connection, "PUT", "/api/settings", {"dark_mode": n % 20 == 0})
        if n % 50 == 0:
            # Keep the table near a UI's size: remove this client's older tasks.
            _, data = call(connection, "GET", listing)
            for task in json.loads(data):
                if task["title"].startswith(f"soak {index}-"):
                    call(connection, "DELETE", f"/api/tasks/{task['id']}")


stop = threading.Event()
threads = [threading.Thread(target=client, args=(i, stop)) for i in range(clients)]
start_rss = rss()
for thread in threads:
    thread.start()
time.sleep(warmup)
warm_rss = rss()
time.sleep(max(0.0, seconds - warmup))
stop.set()
for thread in threads:
    thread.join()
end_rss = rss()
ordered = sorted(latencies)
p99 = ordered[int(len(ordered) * 0.99)] * 1000 if ordered else 0
flat = end_rss <= warm_rss * 1.10
print(f"soak: {len(latencies)} requests in {seconds:.0f} s by {clients} clients, statuses {dict(sorted(statuses.items()))}, "
      f"p99 {p99:.1f} ms; RSS start {start_rss / 2**20:.1f} MiB, after warm-up {warm_rss / 2**20:.1f} MiB, "
      f"end {end_rss / 2**20:.1f} MiB")
for line in errors[:10]:
    print("  5xx:", line)
passed = int(not errors) + int(flat)
print(f"soak: {passed} passed, {2 - passed} failed")
sys.exit(0 if passed == 2 else 1)
