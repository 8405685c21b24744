"""The delivery page in Chromium when the portal sends the person on to a return_to on another allowed
origin: Chromium applies the page's CSP form-action to the redirect that follows the POST, so that
origin must be in it, or the person is stuck on "Signing you in" with a token already used up. Three
plain loopback servers stand in for the app's page, the portal's landing URL and the return_to."""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from shared import pages

pytestmark = pytest.mark.browser


class Origins:
    """page (serves the delivery page), landing (takes the POST, 303s to the next origin), next."""

    def __init__(self, then: bool):
        self.arrived: list[str] = []
        self.posted = threading.Event()
        origins = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                if self.server is origins.page:
                    reply = pages.form_post(f"{origins.url(origins.landing)}/user", {"session_token": "t"},
                                            then=f"{origins.url(origins.next)}/inbox" if then else None)
                    self.send_response(reply.status)
                    for name, value in {**reply.headers, "Content-Type": reply.content_type}.items():
                        self.send_header(name, value)
                    self.end_headers()
                    self.wfile.write(reply.body.encode())
                    return
                if self.path == "/inbox":  # not the browser's /favicon.ico
                    origins.arrived.append(self.path)
                self.send_response(200)
                self.send_header("Content-Type", "text/html")
                self.end_headers()
                self.wfile.write(b"<main><h1 id=inbox>Inbox</h1></main>")

            def do_POST(self):
                self.rfile.read(int(self.headers.get("Content-Length", 0)))
                origins.posted.set()
                self.send_response(303)  # the portal's own redirect to the token's return_to
                self.send_header("Location", f"{origins.url(origins.next)}/inbox")
                self.end_headers()

        self.page, self.landing, self.next = (ThreadingHTTPServer(("127.0.0.1", 0), Handler) for _ in range(3))
        for server in (self.page, self.landing, self.next):
            threading.Thread(target=server.serve_forever, daemon=True).start()

    @staticmethod
    def url(server) -> str:
        return f"http://127.0.0.1:{server.server_port}"

    def close(self) -> None:
        for server in (self.page, self.landing, self.next):
            server.shutdown()
            server.server_close()


@pytest.mark.parametrize("then", [True, False], ids=["return_to origin allowed", "control: portal origin only"])
def test_the_portal_can_send_the_person_on_to_a_return_to_on_another_allowed_origin(browser, then):
    origins = Origins(then)
    context = browser.new_context()
    try:
        page = context.new_page()
        page.goto(f"{origins.url(origins.page)}/callback", wait_until="commit")  # it posts at once
        assert origins.posted.wait(10), "the page posted the token to the portal"
        if then:
            page.wait_for_selector("#inbox", timeout=10_000)
            assert origins.arrived == ["/inbox"], "the person reached the return_to"
        else:
            page.wait_for_timeout(1500)
            assert origins.arrived == [], "Chromium enforces form-action on the redirect (so the test can fail)"
    finally:
        context.close()
        origins.close()
