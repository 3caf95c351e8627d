#!/usr/bin/env python3
"""Drives the API with the UI's calls from several threads and checks every answer against what
was written: a wrong answer is any answer that contradicts the writes this checker made.

usage: checker.py PORTS SECONDS [THREADS]

PORTS is one port or several separated by commas (replicas of the server on one database):
thread i talks to the i-th port, round robin.

Each thread owns the tasks it creates and knows what they hold; lists are checked for the
thread's own tasks (present with their values when created before the list was asked for and
not deleted, absent when deleted before), ids must be unique and in order. A 503 is allowed
(the write may or may not have happened: the task becomes unknown to the checker), and so is a
streamed (chunked) list reset before its last chunk ("cut": the server's way of failing a body
it has begun); a 5xx other than 503, any other dropped connection, or no answer within 20 s is
counted as a failure.

Half of the creates carry an Idempotency-Key and are retried with it after a 503, a 409 or a
lost answer: at the end no such task may exist twice. Half of the updates of a task whose ETag
the thread knows (from its own last write or read) send it in If-Match: a 412 is wrong, since
nobody else writes that task.

Prints one JSON line of counts; exits 1 on any wrong answer, failure or hang.
"""
import collections
import http.client
import json
import random
import socket
import sys
import threading
import time

ports, seconds = [int(port) for port in sys.argv[1].split(",")], float(sys.argv[2])
threads = int(sys.argv[3]) if len(sys.argv) > 3 else 12
TIMEOUT = 20
lock = threading.Lock()
counts = {"requests": 0, "ok": 0, "503": 0, "cut": 0, "wrong": 0, "failures": 0, "hangs": 0}
examples = []
all_ids = {}  # id -> thread that created it
keyed_titles = set()  # titles of creates sent with an Idempotency-Key
RUN = f"{random.getrandbits(32):08x}"  # in every title: runs against one database never share one
STATUSES = ["TODO", "IN_PROGRESS", "DONE"]
SORTS = [None, ("created_at", "asc"), ("created_at", "desc"), ("updated_at", "desc"), ("title", "asc"), ("status", "desc")]


def record(kind, message=None):
    with lock:
        counts[kind] += 1
        if message and len(examples) < 20:
            examples.append(message)


class Client:
    def __init__(self, port):
        self.port = port
        self.connection = None

    def call(self, method, path, body=None, extra=None):
        """(status, parsed JSON or None, headers by lower-case name), or None when there was no answer."""
        with lock:
            counts["requests"] += 1
        for attempt in (0, 1):
            if self.connection is None:
                self.connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=TIMEOUT)
            headers = {"Content-Type": "application/json"} if body is not None else {}
            headers.update(extra or {})
            response = None
            try:
                self.connection.request(method, path, body=None if body is None else json.dumps(body), headers=headers)
                response = self.connection.getresponse()
                data = response.read()
            except (ConnectionResetError, http.client.IncompleteRead) as error:
                self.connection.close()
                self.connection = None
                if response is not None and response.chunked:
                    # A streamed list whose database failed part-way: reset before its last
                    # chunk, so the client cannot take it for whole. No answer, like a 503.
                    record("cut")
                    return None
                record("failures", f"{method} {path}: {error!r}")
                return None
            except socket.timeout:
                self.connection.close()
                self.connection = None
                record("hangs", f"{method} {path}: no answer within {TIMEOUT} s")
                return None
            except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError) as error:
                # A keep-alive connection the server closed between requests may be reused once.
                self.connection.close()
                self.connection = None
                if attempt == 0 and isinstance(error, (http.client.RemoteDisconnected, BrokenPipeError)):
                    continue
                record("failures", f"{method} {path}: {error!r}")
                return None
            except OSError as error:  # refused: the server is gone
                self.connection.close()
                self.connection = None
                record("failures", f"{method} {path}: {error!r}")
                return None
            if response.getheader("Connection", "").lower() == "close":
                self.connection.close()
                self.connection = None
            if response.status == 503:
                record("503")
                return 503, None, {}
            if response.status >= 500:
                record("failures", f"{method} {path}: {response.status} {data[:200]!r}")
                return response.status, None, {}
            record("ok")
            return response.status, (json.loads(data) if data else None), {k.lower(): v for k, v in response.getheaders()}
        return None


def wrong(message):
    record("wrong", message)


def worker(index, stop):
    client = Client(ports[index % len(ports)])
    known = {}  # id -> dict of the task as last written, or "deleted"
    etags = {}  # id -> the ETag of what known holds
    sequence = 0
    while not stop.is_set():
        action = random.random()
        if action < 0.25 or not known:
            sequence += 1
            sent = {"title": f"t{RUN}-{index}-{sequence}", "description": random.choice([None, "", f"d{sequence}"]),
                    "status": random.choice(STATUSES)}
            key = {"Idempotency-Key": f"k{RUN}-{index}-{sequence}"} if random.random() < 0.5 else None
            answer = client.call("POST", "/api/tasks", sent, key)
            if key:
                with lock:
                    keyed_titles.add(sent["title"])
                for _ in range(8):
                    if (answer and answer[0] not in (503, 409)) or stop.is_set():
                        break
                    time.sleep(0.05)
                    answer = client.call("POST", "/api/tasks", sent, key)
            if answer and answer[0] == 201:
                task = answer[1]
                if any(task.get(key) != value for key, value in sent.items()):
                    wrong(f"POST answered {task} for {sent}")
                    continue
                with lock:
                    if task["id"] in all_ids:
                        wrong(f"POST answered id {task['id']} created before by thread {all_ids[task['id']]}")
                        continue
                    all_ids[task["id"]] = index
                known[task["id"]] = task
                etags[task["id"]] = answer[2].get("etag")
            elif answer and answer[0] != 503 and not (key and answer[0] == 409):
                wrong(f"POST answered {answer[:2]}")
        elif action < 0.50:
            task_id = random.choice(list(known))
            expected = known[task_id]
            answer = client.call("GET", f"/api/tasks/{task_id}")
            if not answer or answer[0] == 503:
                continue
            if expected == "deleted":
                if answer[0] != 404:
                    wrong(f"GET /api/tasks/{task_id} after its DELETE answered {answer}")
            elif expected is None:
                if answer[0] == 200 and answer[1].get("id") != task_id:
                    wrong(f"GET /api/tasks/{task_id} answered task {answer[1].get('id')}")
            elif answer[0] != 200 or answer[1] != expected:
                wrong(f"GET /api/tasks/{task_id} answered {answer[:2]} where {expected} was written")
            else:
                etags[task_id] = answer[2].get("etag")
        elif action < 0.65:
            task_id = random.choice(list(known))
            expected = known[task_id]
            change = {"title": f"t{RUN}-{index}-{sequence}-u{random.randrange(1000)}", "status": random.choice(STATUSES)}
            conditional = isinstance(expected, dict) and etags.get(task_id) and random.random() < 0.5
            answer = client.call("PUT", f"/api/tasks/{task_id}", change, {"If-Match": etags[task_id]} if conditional else None)
            if not answer:
                etags.pop(task_id, None)
                continue
            if answer[0] == 503:
                known[task_id] = None if expected != "deleted" else "deleted"
                etags.pop(task_id, None)
            elif answer[0] == 412:
                wrong(f"PUT /api/tasks/{task_id} with the ETag of this thread's own last write answered 412")
            elif expected == "deleted":
                if answer[0] != 404:
                    wrong(f"PUT /api/tasks/{task_id} after its DELETE answered {answer}")
            elif answer[0] == 200:
                task = answer[1]
                if task.get("id") != task_id or any(task.get(key) != value for key, value in change.items()):
                    wrong(f"PUT /api/tasks/{task_id} {change} answered {task}")
                elif expected is not None and (task["created_at"] != expected["created_at"] or task["description"] != expected["description"]):
                    wrong(f"PUT /api/tasks/{task_id} changed fields it was not sent: {task} (was {expected})")
                else:
                    known[task_id] = task
                    etags[task_id] = answer[2].get("etag")
            elif not (answer[0] == 404 and expected is None):
                wrong(f"PUT /api/tasks/{task_id} answered {answer}")
        elif action < 0.75:
            task_id = random.choice(list(known))
            expected = known[task_id]
            answer = client.call("DELETE", f"/api/tasks/{task_id}")
            if not answer:
                continue
            if answer[0] == 503:
                known[task_id] = None if expected != "deleted" else "deleted"
            elif answer[0] == 204:
                if expected == "deleted":
                    wrong(f"DELETE /api/tasks/{task_id} answered 204 for a task deleted before")
                known[task_id] = "deleted"
            elif answer[0] == 404:
                if expected not in ("deleted", None):
                    wrong(f"DELETE /api/tasks/{task_id} answered 404 for a task that exists")
                known[task_id] = "deleted"
            else:
                wrong(f"DELETE /api/tasks/{task_id} answered {answer}")
        elif action < 0.92:
            sort = random.choice(SORTS)
            path = "/api/tasks" if sort is None else f"/api/tasks?sort_by={sort[0]}&sort_order={sort[1]}"
            snapshot = dict(known)
            answer = client.call("GET", path)
            if not answer or answer[0] == 503:
                continue
            if answer[0] != 200 or not isinstance(answer[1], list):
                wrong(f"GET {path} answered {answer[0]}")
                continue
            tasks = answer[1]
            ids = [task["id"] for task in tasks]
            if len(set(ids)) != len(ids):
                wrong(f"GET {path} listed an id twice")
            if sort is None and ids != sorted(ids):
                wrong(f"GET {path} is not in id order")
            if sort and sort[0] in ("created_at", "updated_at"):
                keys = [(task[sort[0]], task["id"]) for task in tasks]
                ordered = sorted(keys, key=lambda key: key[0], reverse=sort[1] == "desc")
                if [key[0] for key in keys] != [key[0] for key in ordered]:
                    wrong(f"GET {path} is not ordered by {sort[0]} {sort[1]}")
            listed = {task["id"]: task for task in tasks}
            for task_id, expected in snapshot.items():
                if expected == "deleted" and task_id in listed and known.get(task_id) == "deleted":
                    wrong(f"GET {path} lists task {task_id}, deleted before the list was asked for")
                elif isinstance(expected, dict) and known.get(task_id) == expected:
                    if task_id not in listed:
                        wrong(f"GET {path} misses task {task_id}")
                    elif listed[task_id] != expected:
                        wrong(f"GET {path} lists {listed[task_id]} where {expected} was written")
        else:
            dark = random.random() < 0.5
            if random.random() < 0.5:
                answer = client.call("PUT", "/api/settings", {"dark_mode": dark})
                if answer and answer[0] == 200 and answer[1].get("dark_mode") is not dark:
                    wrong(f"PUT /api/settings dark_mode={dark} answered {answer[1]}")
                elif answer and answer[0] not in (200, 503):
                    wrong(f"PUT /api/settings answered {answer}")
            else:
                answer = client.call("GET", "/api/settings")
                if answer and answer[0] == 200:
                    if set(answer[1]) != {"dark_mode", "updated_at"} or not isinstance(answer[1]["dark_mode"], bool):
                        wrong(f"GET /api/settings answered {answer[1]}")
                elif answer and answer[0] != 503:
                    wrong(f"GET /api/settings answered {answer}")


def check_keyed_creates():
    """No create sent with an Idempotency-Key made two tasks, however often it was retried."""
    client = Client(ports[0])
    for _ in range(20):
        answer = client.call("GET", "/api/tasks")
        if answer and answer[0] == 200:
            made = collections.Counter(task["title"] for task in answer[1])
            for title in sorted(title for title, count in made.items() if count > 1 and title in keyed_titles):
                wrong(f"the create of {title!r}, sent with an Idempotency-Key, made {made[title]} tasks")
            return
        time.sleep(0.2)
    record("failures", "the final list could not be read")


def main():
    stop = threading.Event()
    workers = [threading.Thread(target=worker, args=(index, stop)) for index in range(threads)]
    for thread in workers:
        thread.start()
    time.sleep(seconds)
    stop.set()
    for thread in workers:
        thread.join(TIMEOUT + 5)
    check_keyed_creates()
    print(json.dumps(counts), flush=True)
    for example in examples:
        print("  " + example, flush=True)
    return 1 if counts["wrong"] or counts["failures"] or counts["hangs"] else 0


sys.exit(main())
