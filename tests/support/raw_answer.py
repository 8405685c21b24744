"""A loopback HTTP server that answers each request with bytes the test scripts, at the pace it
scripts: a body trickled a few bytes at a time after prompt headers (each read of the socket well
within a read timeout, the whole answer far past it), or a compressed body that decodes to far more
than it weighs. What a real server cannot be made to do on purpose. `Listener` is the loopback
listener under it (and under test_single_flight.py's silent vault)."""

from __future__ import annotations

import gzip
import socket
import threading
import time
from collections.abc import Iterator


class Listener:
    """A loopback listener handing each connection to `serve` in a thread of its own; `connections`
    counts them, and `close` stops it and closes every one it took."""

    def __init__(self, scheme: str = "http") -> None:
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"{scheme}://127.0.0.1:{self._listener.getsockname()[1]}"
        self.connections = 0
        self._held: list[socket.socket] = []
        self._lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self._listener.accept()
            except OSError:
                return
            with self._lock:
                self.connections += 1
                self._held.append(conn)
            threading.Thread(target=self.serve, args=(conn,), daemon=True).start()

    def serve(self, conn: socket.socket) -> None:
        raise NotImplementedError

    def close(self) -> None:
        self._listener.close()
        with self._lock:
            for conn in self._held:
                conn.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


class RawAnswer(Listener):
    """Answers every request with `head` at once, then each piece of `body` after `pause` seconds."""

    def __init__(self, head: bytes, body: Iterator[bytes] | list[bytes], pause: float = 0.0) -> None:
        self._head, self._body, self._pause = head, list(body), pause
        super().__init__()

    def serve(self, conn: socket.socket) -> None:
        with conn:
            try:
                conn.recv(65536)
                conn.sendall(self._head)
                for piece in self._body:
                    time.sleep(self._pause)
                    conn.sendall(piece)
            except OSError:  # the client gave up: what the test wants
                pass


def trickled(body: bytes, *, every: float, piece: int = 1, close: bool = False) -> RawAnswer:
    """`body` with its Content-Length at once, then `piece` bytes every `every` seconds; `close`: the
    headers say `Connection: close` (the client keeps no connection, only the file it reads from)."""
    head = (f"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n"
            f"{'Connection: close' + chr(13) + chr(10) if close else ''}\r\n").encode()
    return RawAnswer(head, [body[i:i + piece] for i in range(0, len(body), piece)], every)


def gzip_bomb(decoded_size: int) -> RawAnswer:
    """A 200 whose gzip body (Content-Encoding: gzip) decodes to `decoded_size` bytes of JSON-ish text."""
    body = gzip.compress(b'{"keys": ["' + b"a" * decoded_size + b'"]}', compresslevel=9)
    head = (f"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Encoding: gzip\r\n"
            f"Content-Length: {len(body)}\r\n\r\n").encode()
    return RawAnswer(head, [body])
