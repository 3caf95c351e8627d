#!/usr/bin/env python3
"""Long lists read by many clients at once, half of them slowly, while the server's resident
memory is sampled from /proc: what a streamed list costs in memory.

usage: list_memory.py PORT SERVER_PID [CLIENTS] [PATH]

Each client sends one GET of PATH (default the list sorted by created_at, newest first) over
HTTP/1.1 and reads the whole answer; odd-numbered clients read 16 KiB every 10 ms (about
1.6 MB/s). Prints one line: RSS before, peak and after (MiB), the statuses, bytes per client,
whether every chunked body ended with its last chunk, and how long the slowest took.
"""
import socket
import sys
import threading
import time

port, pid = int(sys.argv[1]), int(sys.argv[2])
clients = int(sys.argv[3]) if len(sys.argv) > 3 else 32
path = sys.argv[4] if len(sys.argv) > 4 else "/api/tasks?sort_by=created_at&sort_order=desc"


def rss_mib():
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


results = [None] * clients


def client(index):
    slow = index % 2 == 1
    sock = socket.create_connection(("127.0.0.1", port))
    sock.settimeout(120)
    sock.sendall(f"GET {path} HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n".encode())
    data = bytearray()
    while True:
        try:
            piece = sock.recv(16384 if slow else 262144)
        except OSError:
            break
        if not piece:
            break
        data += piece
        if slow:
            time.sleep(0.01)
    sock.close()
    head, _, body = bytes(data).partition(b"\r\n\r\n")
    status = int(head.split(b" ")[1]) if head.startswith(b"HTTP/") else 0
    whole = body.endswith(b"\r\n0\r\n\r\n") if b"chunked" in head.lower() else status != 0
    results[index] = (status, len(body), whole)


idle = rss_mib()
peak = idle
threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
started = time.monotonic()
for thread in threads:
    thread.start()
while any(thread.is_alive() for thread in threads):
    peak = max(peak, rss_mib())
    time.sleep(0.05)
took = time.monotonic() - started
statuses = {}
for status, _, _ in results:
    statuses[status] = statuses.get(status, 0) + 1
sizes = sorted(size for _, size, _ in results)
print(f"clients={clients} rss_mib idle={idle:.1f} peak={peak:.1f} above_idle={peak - idle:.1f} after={rss_mib():.1f} "
      f"statuses={statuses} body_bytes min={sizes[0]} max={sizes[-1]} all_whole={all(w for _, _, w in results)} seconds={took:.1f}")
