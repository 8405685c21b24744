"""A small fault-injecting TCP proxy for loopback: the app talks to Azurite through it, and the tests
decide what happens to each HTTP request on the way. Every request line and every response status is
recorded in order, so a test can count what the app asked of storage and what storage answered.

    with FaultProxy(target_port=azurite.port, failure_rate=0.2, seed=7) as proxy:
        connection string with TableEndpoint=http://127.0.0.1:{proxy.port}/devstoreaccount1

A failed request is cut in one of two ways, at random: before it reaches Azurite (nothing happened),
or after Azurite answered and before the answer reaches the app (it happened, the app cannot know).
With `hanging` set, every request is swallowed instead: the connection stays open and no answer ever
comes, as when a peer or a load balancer silently drops a pooled connection (no FIN, no RST).
`decide` (an Exchange -> its fault) picks the requests to fail instead of chance, e.g. the first two
audit inserts; a "before" cut waits `cut_delay` seconds first (a failure that is slow to show). A
"page" fault answers the request in Azurite's place with a 200 HTML page (a gateway or captive proxy
before storage), which Azurite never sees; a "busy" fault answers storage's own 503 `ServerBusy` with
`Retry-After: busy_retry_after` instead.
"""

from __future__ import annotations

import random
import re
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

PAGE = b"<html><body><h1>Service Unavailable</h1><p>The gateway could not reach the service.</p></body></html>"
PAGE_ANSWER = (b"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Length: %d\r\nConnection: close\r\n\r\n"
               % len(PAGE) + PAGE)
# A 200 of JSON that is no table data (a health endpoint or an API gateway's own answer in storage's place).
NOT_TABLE_DATA = b'{"status": "ok"}'
JSON_ANSWER = (b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\nConnection: close\r\n\r\n"
               % len(NOT_TABLE_DATA) + NOT_TABLE_DATA)
BUSY = b'{"odata.error":{"code":"ServerBusy","message":{"lang":"en-US","value":"The server is busy."}}}'
# Storage's own 503 for a busy partition, with its Retry-After (`busy_retry_after` seconds).
BUSY_ANSWER = (b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json;odata=minimalmetadata\r\n"
               b"Retry-After: %d\r\nContent-Length: " + str(len(BUSY)).encode()
               + b"\r\nConnection: close\r\n\r\n" + BUSY)
REQUEST_LINE = re.compile(rb"^(GET|PUT|POST|PATCH|MERGE|DELETE|HEAD|OPTIONS) (\S+) HTTP/1\.[01]\r\n")
STATUS_LINE = re.compile(rb"^HTTP/1\.[01] (\d{3}) ")


@dataclass
class Exchange:
    method: str
    path: str
    status: int | None = None  # None: no answer reached the app
    fault: str = ""  # "", "before" (never reached Azurite), "after" (the answer was lost), "hung", "page", "json"
    # or "busy"


class FaultProxy:
    def __init__(self, target_port: int, failure_rate: float = 0.0, seed: int | None = None):
        self.target_port = target_port
        self.failure_rate = failure_rate
        self.refusing = False  # True: every connection is cut at once (storage down)
        self.hanging = False  # True: requests are swallowed, connections held open (a black hole)
        self.decide: Callable[[Exchange], str] | None = None  # chosen faults, for requests chance spared
        self.cut_delay = 0.0
        self.busy_retry_after = 10  # the Retry-After of a "busy" fault's 503
        self.exchanges: list[Exchange] = []
        self._random = random.Random(seed)
        self._lock = threading.Lock()
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self._open: set[socket.socket] = set()
        self._hung: set[socket.socket] = set()  # app-side connections holding a swallowed request
        self._stopped = False

    def __enter__(self) -> FaultProxy:
        threading.Thread(target=self._accept, name="fault-proxy", daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stopped = True
        self._listener.close()
        self.cut_all()

    def cut_all(self) -> None:
        """Cuts every open connection (pooled keep-alive ones too)."""
        with self._lock:
            conns, self._open, self._hung = list(self._open), set(), set()
        for conn in conns:
            _close(conn)

    def _accept(self) -> None:
        while not self._stopped:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            if self.refusing:
                _close(client)
                continue
            threading.Thread(target=self._relay, args=(client,), daemon=True).start()

    def _relay(self, client: socket.socket) -> None:
        try:
            upstream = socket.create_connection(("127.0.0.1", self.target_port), timeout=10)
        except OSError:
            _close(client)
            return
        with self._lock:
            self._open |= {client, upstream}
        pending: list[Exchange] = []  # requests of this connection still waiting for their answer
        exchange = Exchange("", "")  # the request whose bytes are passing now
        threading.Thread(target=self._answers, args=(upstream, client, pending), daemon=True).start()
        try:
            while data := client.recv(65536):
                found = REQUEST_LINE.match(data)
                if found:
                    exchange = Exchange(found.group(1).decode(), found.group(2).decode())
                    with self._lock:
                        self.exchanges.append(exchange)
                        fail = self.refusing or self._random.random() < self.failure_rate
                        exchange.fault = ("before" if self._random.random() < 0.5 else "after") if fail else ""
                        if self.hanging:
                            exchange.fault = "hung"
                        if self.decide is not None and not exchange.fault:
                            exchange.fault = self.decide(exchange)
                    if exchange.fault == "before":
                        time.sleep(self.cut_delay)
                        break
                    if exchange.fault in ("page", "json"):  # answered here, and the connection closed (as it says)
                        exchange.status = 200
                        client.sendall(PAGE_ANSWER if exchange.fault == "page" else JSON_ANSWER)
                        break
                    if exchange.fault == "busy":  # storage's busy 503 in Azurite's place, then closed
                        exchange.status = 503
                        client.sendall(BUSY_ANSWER % self.busy_retry_after)
                        break
                    if exchange.fault != "hung":
                        pending.append(exchange)
                if exchange.fault == "hung":
                    with self._lock:
                        self._hung.add(client)
                    continue  # swallowed: read on (so the app's send never blocks), answer nothing
                upstream.sendall(data)
        except OSError:
            pass
        _close(client)
        _close(upstream)

    def _answers(self, upstream: socket.socket, client: socket.socket, pending: list[Exchange]) -> None:
        try:
            while data := upstream.recv(65536):
                found = STATUS_LINE.match(data)
                if found and pending:
                    exchange = pending.pop(0)
                    if exchange.fault == "after":
                        break  # Azurite did the work; the app never hears of it
                    exchange.status = int(found.group(1))
                client.sendall(data)
        except OSError:
            pass
        _close(upstream)
        with self._lock:
            if client in self._hung:
                return  # a black hole says nothing, not even that Azurite closed its idle side
        _close(client)


def _close(conn: socket.socket) -> None:
    for step in (lambda: conn.shutdown(socket.SHUT_RDWR), conn.close):
        try:
            step()
        except OSError:
            pass
