#!/usr/bin/env python3
"""A TCP proxy between the server and PostgreSQL that misbehaves on purpose.

usage: pgproxy.py LISTEN_PORT UPSTREAM_HOST UPSTREAM_PORT MODE [RATE] [SEED]

PostgreSQL's answers (server to client) are parsed into protocol messages once the session is
up (after the first ReadyForQuery), and grouped into segments (everything up to and including
a ReadyForQuery: the answer to one sync). MODE says what goes wrong, each with probability
RATE per segment (default 0.02):

  pass      nothing (a baseline)
  delay     the segment is held back 1-60 ms
  stall     the connection stops forwarding for 3-8 s, then carries on
  cut       the connection is closed in the middle of the segment
  truncate  the client's next bytes are cut short and the connection closed (the client side)
  swap      the segment goes to another connection's client instead (whole and well-formed:
            what a transaction pooler that hands a backend over too early does)
  garble    one message of the segment goes to another connection's client
  replay    the segment is delivered twice
  killcommit  once: after a transaction that wrote an idempotency key, PostgreSQL's answer to its
            COMMIT is held back and the backend killed with pg_terminate_backend (through psql
            and $PGPROXY_ADMIN_URL): committed, but the client never hears so

Counts of faults injected are printed to stdout every second and at exit (SIGTERM).
"""
import asyncio
import os
import random
import signal
import struct
import sys

listen_port, upstream_host, upstream_port, mode = int(sys.argv[1]), sys.argv[2], int(sys.argv[3]), sys.argv[4]
rate = float(sys.argv[5]) if len(sys.argv) > 5 else 0.02
rng = random.Random(int(sys.argv[6]) if len(sys.argv) > 6 else 1)
injected = 0
fired = False  # killcommit fires once
sessions = []  # live Session objects, for swap/garble


class Session:
    def __init__(self, client_writer):
        self.client_writer = client_writer
        self.closed = False
        self.backend_pid = None
        self.wrote_key = False  # killcommit: the open transaction wrote an idempotency key
        self.committing = False

    def deliver(self, data):
        if not self.closed:
            self.client_writer.write(data)


def split_messages(buffer):
    """Complete backend messages at the front of buffer, and the rest."""
    messages, offset = [], 0
    while len(buffer) - offset >= 5:
        length = struct.unpack("!I", buffer[offset + 1:offset + 5])[0]
        if len(buffer) - offset < 1 + length:
            break
        messages.append(bytes(buffer[offset:offset + 1 + length]))
        offset += 1 + length
    return messages, buffer[offset:]


async def server_to_client(session, upstream_reader, upstream_writer):
    global injected
    buffer, segment, ready = bytearray(), [], False
    while True:
        data = await upstream_reader.read(65536)
        if not data:
            break
        if not ready and mode != "pass":
            # Startup (authentication, parameters) passes through untouched.
            buffer += data
            messages, rest = split_messages(buffer)
            buffer = bytearray(rest)
            for message in messages:
                session.deliver(message)
                if message[:1] == b"K":
                    session.backend_pid = struct.unpack("!I", message[5:9])[0]
                if message[:1] == b"Z":
                    ready = True
            await session.client_writer.drain()
            continue
        if mode == "pass":
            session.deliver(data)
            await session.client_writer.drain()
            continue
        buffer += data
        messages, rest = split_messages(buffer)
        buffer = bytearray(rest)
        for message in messages:
            segment.append(message)
            if message[:1] != b"Z":
                continue
            whole, segment = b"".join(segment), []
            if mode == "killcommit":
                global fired
                if session.committing and not fired and b"COMMIT\x00" in whole:
                    fired = True
                    injected += 1
                    admin = await asyncio.create_subprocess_exec(
                        "psql", os.environ["PGPROXY_ADMIN_URL"], "-Atc", f"SELECT pg_terminate_backend({session.backend_pid})",
                        stdout=asyncio.subprocess.DEVNULL)
                    await admin.wait()
                    continue  # the answer is never delivered; the backend's FATAL and EOF follow
                session.committing = False
                session.deliver(whole)
                continue
            if rng.random() >= rate:
                session.deliver(whole)
                continue
            injected += 1
            if mode == "delay":
                await asyncio.sleep(rng.uniform(0.001, 0.06))
                session.deliver(whole)
            elif mode == "stall":
                await asyncio.sleep(rng.uniform(3, 8))
                session.deliver(whole)
            elif mode == "cut":
                session.deliver(whole[: rng.randrange(1, len(whole))])
                await session.client_writer.drain()
                raise ConnectionResetError("cut by the proxy")
            elif mode == "replay":
                session.deliver(whole)
                session.deliver(whole)
            elif mode in ("swap", "garble"):
                others = [s for s in sessions if s is not session and not s.closed]
                if not others:
                    session.deliver(whole)
                    continue
                other = rng.choice(others)
                if mode == "swap":
                    other.deliver(whole)
                else:
                    parts = split_messages(bytearray(whole))[0]
                    index = rng.randrange(len(parts))
                    other.deliver(parts[index])
                    session.deliver(b"".join(parts[:index] + parts[index + 1:]))
            else:
                session.deliver(whole)
        await session.client_writer.drain()


async def client_to_server(session, client_reader, upstream_writer):
    global injected
    while True:
        data = await client_reader.read(65536)
        if not data:
            break
        if mode == "truncate" and len(data) > 1 and rng.random() < rate:
            injected += 1
            upstream_writer.write(data[: rng.randrange(1, len(data))])
            await upstream_writer.drain()
            raise ConnectionResetError("truncated by the proxy")
        if mode == "killcommit":
            if b"insert_idempotency_key" in data:
                session.wrote_key = True
            if session.wrote_key and b"COMMIT" in data:
                session.committing, session.wrote_key = True, False
        upstream_writer.write(data)
        await upstream_writer.drain()


async def handle(client_reader, client_writer):
    try:
        upstream_reader, upstream_writer = await asyncio.open_connection(upstream_host, upstream_port)
    except OSError:
        client_writer.close()
        return
    session = Session(client_writer)
    sessions.append(session)
    tasks = [
        asyncio.ensure_future(server_to_client(session, upstream_reader, upstream_writer)),
        asyncio.ensure_future(client_to_server(session, client_reader, upstream_writer)),
    ]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        session.closed = True
        sessions.remove(session)
        for task in tasks:
            task.cancel()
        for writer in (client_writer, upstream_writer):
            try:
                writer.close()
            except Exception:
                pass


async def report(stop):
    while not stop.is_set():
        print(f"pgproxy {mode}: {injected} faults injected, {len(sessions)} sessions", flush=True)
        try:
            await asyncio.wait_for(stop.wait(), 1)
        except asyncio.TimeoutError:
            pass


async def main():
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, stop.set)
    server = await asyncio.start_server(handle, "127.0.0.1", listen_port)
    async with server:
        await report(stop)
    print(f"pgproxy {mode}: {injected} faults injected in all", flush=True)


asyncio.run(main())
