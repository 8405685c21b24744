"""The callback request as the host hands it over, and the authorization response parsed from it.

Parsing belongs to the login (not the HTTP glue) so that a malformed callback is audited and logged
with its real cause, like every other failure."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from urllib.parse import parse_qsl

from .errors import InvalidRequest

MAX_BODY = 64 * 1024  # an authorization response is a few KB; more is not one
FORM = "application/x-www-form-urlencoded"


@dataclass(frozen=True)
class CallbackRequest:
    """The parts of the callback's HTTP request the login reads, unparsed."""

    method: str
    content_type: str = ""
    body: bytes = b""
    query: Mapping[str, str] = field(default_factory=dict)
    cookie_header: str = ""


def parse_cookies(header: str) -> dict[str, str]:
    """A Cookie header's name=value pairs; of duplicate names the first (the most specific) wins."""
    jar: dict[str, str] = {}
    for part in (header or "").split(";"):
        name, sep, value = part.strip().partition("=")
        if sep and name and name not in jar:
            jar[name] = value.strip()
    return jar


@dataclass
class Callback:
    params: dict[str, str]  # the authorization response: form body (form_post) or query (GET)
    cookies: dict[str, str]
    query_mode: bool = False  # a GET: the response came in the URL
    finished: bool = False  # set once the flow is over (its marker consumed, or the IdP ended it)

    @classmethod
    def parse(cls, request: CallbackRequest) -> Callback:
        """form_post puts the response in the body; a GET callback (query mode) in the query string.
        Raises InvalidRequest (400) naming what is wrong with a POST body: its size, its content type,
        or bytes that are not UTF-8."""
        cookies = parse_cookies(request.cookie_header)
        if request.method.upper() != "POST":
            return cls(dict(request.query), cookies, query_mode=True)
        if len(request.body) > MAX_BODY:
            raise InvalidRequest(f"callback body of {len(request.body)} bytes (at most {MAX_BODY})")
        content_type = request.content_type.split(";")[0].strip().lower()
        if content_type != FORM:
            raise InvalidRequest(f"callback body of type {content_type[:100] or 'none'}, not {FORM}")
        try:
            text = request.body.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise InvalidRequest("callback body is not UTF-8") from exc
        return cls(dict(parse_qsl(text, keep_blank_values=True)), cookies)
