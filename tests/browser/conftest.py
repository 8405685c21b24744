"""The Chromium fixture of the browser tests (Debian's chromium, driven by Playwright)."""

from __future__ import annotations

import base64
import hashlib
import shutil
from collections.abc import Iterator

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from tests.conftest import APP_BASE, PORTAL_ORIGIN, PORTAL_PORT
from tools.demo_portal import DemoPortal
from tools.host import serve_in_thread

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"


def spki_hash(cert_file) -> str:
    """Chromium's --ignore-certificate-errors-spki-list pins exactly this key, instead of trusting
    every certificate: the browser still refuses any other server."""
    cert = x509.load_pem_x509_certificate(cert_file.read_bytes())
    spki = cert.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return base64.b64encode(hashlib.sha256(spki).digest()).decode()


@pytest.fixture(scope="module")
def browser(test_ca, tmp_path_factory):
    from playwright.sync_api import sync_playwright

    assert shutil.which("chromium") or shutil.os.path.exists(CHROMIUM), \
        "Chromium is missing: `make setup` installs Debian's chromium package"
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM, headless=True,
            args=["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  f"--ignore-certificate-errors-spki-list={spki_hash(test_ca.server_cert)}"])
        yield browser
        browser.close()


@pytest.fixture(scope="module")
def portal(app_server, test_ca) -> Iterator[str]:
    """The demo portal, at PORTAL_ORIGIN, in front of the app under test."""
    handle = serve_in_thread(DemoPortal(APP_BASE, PORTAL_ORIGIN), port=PORTAL_PORT,
                             ssl_context=(str(test_ca.server_cert), str(test_ca.server_key)))
    yield handle.url
    handle.stop()


def sign_in_on_the_idp_page(page, person: dict) -> None:
    """At the IdP's login page: the person's name and password, then wait for the portal's page."""
    page.fill("#login", person["login"])
    page.fill("#password", person["password"])
    page.click("button[type=submit]")
    try:
        page.wait_for_selector("#signed-in", timeout=20000)
    except Exception:
        page.screenshot(path="/tmp/browser-fail.png")
        raise AssertionError(f"no portal page; at {page.url}: {page.content()[:1500]}") from None
