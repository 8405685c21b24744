"""A loopback HTTP server that answers each request with bytes the test scripts, at the pace it
scripts: a body trickled a few bytes at a time after prompt headers (each read of the socket well
within a read timeout, the whole answer far past it), or a compressed body that decodes to far more
than it weighs. What a real server cannot be made to do on purpose."""

from __future__ import annotations

import gzip
import socket
import threading
import time
from collections.abc import Iterator


class RawAnswer:
    """Answers every request on `url` with `head` at once, then each piece of `body` after `pause`
    seconds. `answered` counts the requests read."""

    def __init__(self, head: bytes, body: Iterator[bytes] | list[bytes], pause: float = 0.0) -> None:
        self._head, self._body, self._pause = head, list(body), pause
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self._listener.getsockname()[1]}"
        self.answered = 0
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self._listener.accept()
            except OSError:
                return
            threading.Thread(target=self._answer, args=(conn,), daemon=True).start()

    def _answer(self, conn: socket.socket) -> None:
        with conn:
            try:
                conn.recv(65536)
                self.answered += 1
                conn.sendall(self._head)
                for piece in self._body:
                    time.sleep(self._pause)
                    conn.sendall(piece)
            except OSError:  # the client gave up: what the test wants
                pass

    def close(self) -> None:
        self._listener.close()

    def __enter__(self) -> RawAnswer:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


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
