#!/usr/bin/env python3
"""Many subscribers on one process's /api/events while something else writes: whether every
subscriber receives every event, how long a change takes to reach them, and what a subscriber
costs the server in memory.

usage: events_load.py PORT SERVER_PID SUBSCRIBERS SECONDS CLIENT

CLIENT is scripts/bench/events_client.c compiled: it holds the SUBSCRIBERS streams and reads
them with epoll (a Python reader fell behind the server). Meanwhile this script creates a
marker task every 100 ms for SECONDS, noting the monotonic time of each 201. Prints one line:
RSS before and after subscribing (KiB per subscriber), events per subscriber (min/max), the
markers every subscriber saw, and their delivery after the 201 (p50, p99, max).
"""
import http.client
import json
import subprocess
import sys
import tempfile
import time

port, pid, count, seconds, client_binary = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4]), sys.argv[5]


def rss_kib():
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


before = rss_kib()
# The client's lines go to a file: through a pipe nobody reads until the end, the client would
# stop reading its streams once 64 KiB of lines are waiting (30 bytes per subscriber per marker).
lines = tempfile.TemporaryFile(mode="w+")
client = subprocess.Popen([client_binary, str(port), str(count), str(seconds + 10)], stdout=lines, stderr=subprocess.PIPE, text=True)
assert client.stderr.readline().startswith("subscribed")
time.sleep(2)
subscribed = rss_kib()
sent = {}
connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
started = time.monotonic()
index = 0
while time.monotonic() - started < seconds:
    connection.request("POST", "/api/tasks", body=json.dumps({"title": f"marker-{index}"}), headers={"Content-Type": "application/json"})
    response = connection.getresponse()
    response.read()
    if response.status == 201:
        sent[index] = time.monotonic_ns()
    index += 1
    time.sleep(0.1)
client.wait()
lines.seek(0)
output = lines.read()
seen = {}
counts = []
ended = 0
for line in output.splitlines():
    parts = line.split()
    if parts[0] == "marker":
        seen.setdefault((int(parts[1]), int(parts[2])), int(parts[3]))
    elif parts[0] == "events":
        counts.append(int(parts[2]))
    elif parts[0] == "ended":
        ended = int(parts[1])
delays = sorted((at - sent[marker]) / 1e6 for (marker, _), at in seen.items() if marker in sent)
missing = len(sent) * count - sum(1 for (marker, _) in seen if marker in sent)
pct = lambda p: delays[min(len(delays) - 1, int(len(delays) * p))] if delays else float("nan")
print(f"subscribers={count} rss_kib before={before} subscribed={subscribed} per_subscriber_kib={(subscribed - before) / count:.1f} "
      f"events_per_subscriber min={min(counts)} max={max(counts)} markers={len(sent)} missing={missing} "
      f"delivery_ms p50={pct(0.5):.1f} p99={pct(0.99):.1f} max={delays[-1] if delays else float('nan'):.1f} ended_early={ended}")
