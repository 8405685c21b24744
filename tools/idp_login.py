"""Drive the dev IdP's login page (devstack/idp.mjs) with ``requests``, without a browser.

The IdP's certificate comes from the local test CA, so the caller must have pointed the
``REQUESTS_CA_BUNDLE`` environment variable at the bundle that includes it (and removed
``CURL_CA_BUNDLE``); see ``tools.stack.trust_env``. ``requests`` lets that variable win over
``Session.verify``, so setting ``session.verify`` alone is not enough.
"""

from __future__ import annotations

from html.parser import HTMLParser
from urllib.parse import urljoin

import requests

TIMEOUT = 15


class _Form:
    def __init__(self, attrs: dict[str, str]) -> None:
        self.attrs = attrs
        self.inputs: list[dict[str, str]] = []

    @property
    def names(self) -> set[str]:
        return {i.get("name", "") for i in self.inputs}

    def fields(self) -> dict[str, str]:
        return {i["name"]: i.get("value", "") for i in self.inputs if i.get("name")}


class _FormParser(HTMLParser):
    """Collects forms, their inputs, and the text of elements marked as errors."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.forms: list[_Form] = []
        self.errors: list[str] = []
        self._current: _Form | None = None
        self._in_error = 0
        self.title = ""
        self._in_title = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = {k: (v or "") for k, v in attrs}
        if tag == "form":
            self._current = _Form(values)
            self.forms.append(self._current)
        elif tag == "input" and self._current is not None:
            self._current.inputs.append(values)
        elif tag == "title":
            self._in_title = True
        if "error" in values.get("class", "").split() or values.get("role") == "alert":
            self._in_error += 1

    def handle_endtag(self, tag: str) -> None:
        if tag == "form":
            self._current = None
        elif tag == "title":
            self._in_title = False
        elif self._in_error and tag in {"p", "div", "span"}:
            self._in_error -= 1

    def handle_data(self, data: str) -> None:
        if self._in_error and data.strip():
            self.errors.append(data.strip())
        if self._in_title:
            self.title += data


def parse_forms(html: str) -> _FormParser:
    """The forms (with their inputs, values unescaped), error texts and title of an HTML page."""
    parser = _FormParser()
    parser.feed(html)
    parser.close()
    return parser


def login_form(page: _FormParser) -> _Form | None:
    for form in page.forms:
        if {"login", "password"} <= form.names:
            return form
    return None


def _callback_form(page: _FormParser) -> _Form | None:
    for form in page.forms:
        if form.attrs.get("method", "get").lower() == "post" and (
            "code" in form.names or "error" in form.names
        ):
            return form
    return None


def _describe(response: requests.Response) -> str:
    body = response.text
    return f"HTTP {response.status_code} at {response.url}; body starts: {body[:600]!r}"


def sign_in_at_idp(
    session: requests.Session,
    auth_uri: str,
    login: str,
    password: str,
    *,
    allow_error: bool = False,
) -> tuple[str, dict[str, str]]:
    """Sign ``login`` in at the dev IdP, starting from the authorization request ``auth_uri``.

    GETs ``auth_uri`` (following redirects to the IdP's login page), posts the login form, follows
    the redirects until the IdP answers with its ``response_mode=form_post`` page and returns that
    page's form as ``(action_url, fields)``: the redirect URI and the hidden inputs (``code``,
    ``state``, ``iss``). When the session is already signed in at the IdP, the login page is skipped.

    Raises AssertionError naming the step when something else happens: no login page, the login is
    refused (wrong password: the IdP shows its form again), no form_post page, or the IdP answers
    with an ``error`` (unless ``allow_error``, then the error fields are returned).
    """
    first = session.get(auth_uri, timeout=TIMEOUT)
    page = parse_forms(first.text)
    callback = _callback_form(page)
    if callback is None:
        if first.status_code != 200:
            raise AssertionError(f"IdP did not show its login page: {_describe(first)}")
        form = login_form(page)
        if form is None:
            raise AssertionError(f"IdP page has no login form (login/password): {_describe(first)}")
        action = urljoin(first.url, form.attrs.get("action") or first.url)
        data = form.fields()
        data.update({"login": login, "password": password})
        answer = session.post(action, data=data, timeout=TIMEOUT)
        page = parse_forms(answer.text)
        if login_form(page) is not None:
            message = "; ".join(page.errors) or "no error message shown"
            raise AssertionError(
                f"IdP refused the login of {login!r} (HTTP {answer.status_code}, still on the login page): "
                f"{message}"
            )
        callback = _callback_form(page)
        if callback is None:
            raise AssertionError(
                f"IdP did not answer with its form_post page after login: {_describe(answer)}"
            )
        base = answer.url
    else:
        base = first.url
    fields = callback.fields()
    action_url = urljoin(base, callback.attrs.get("action", ""))
    if "error" in fields and not allow_error:
        raise AssertionError(
            f"IdP answered with an error: {fields.get('error')}: {fields.get('error_description', '')}"
        )
    return action_url, fields
