"""What the SSO endpoints send back, as host-neutral `Reply` values: the form_post page that hands
the session token to the portal, error pages, redirects; and the security headers they all carry."""

from __future__ import annotations

import base64
import hashlib
import html
import json
from dataclasses import dataclass, field

from .errors import SsoError

STYLE = ("body{font-family:system-ui,sans-serif;max-width:40rem;margin:3rem auto;padding:0 1rem;color:#1b1b1b}"
         "h1{font-size:1.4rem}.box{border-left:4px solid #c50f1f;padding:.5rem 1rem;background:#fdf3f4}"
         ".hint{border-left-color:#0f6cbd;background:#f0f6fc}code,pre{background:#f4f4f4;padding:.1rem .3rem;"
         "white-space:pre-wrap;word-break:break-word}small{color:#555}button{font-size:1rem;padding:.5rem 1rem}")
AUTO_SUBMIT = 'document.getElementById("portal-sso").submit();'


def _csp_hash(source: str) -> str:
    return "'sha256-" + base64.b64encode(hashlib.sha256(source.encode()).digest()).decode() + "'"


@dataclass
class Reply:
    status: int
    body: str = ""
    content_type: str = "text/html; charset=utf-8"
    headers: dict[str, str] = field(default_factory=dict)
    cookies: list[str] = field(default_factory=list)  # Set-Cookie values


def security_headers(*, form_action: str | None = None, script: bool = False, cache: str = "no-store") -> dict:
    """Headers of every SSO response: nothing cached, no referrer (URLs may hold a code), no framing,
    and a CSP that allows only our own inline style and, on the form_post page, our one script."""
    csp = ["default-src 'none'", f"style-src {_csp_hash(STYLE)}", "frame-ancestors 'none'", "base-uri 'none'",
           f"form-action {form_action}" if form_action else "form-action 'none'"]
    if script:
        csp.append(f"script-src {_csp_hash(AUTO_SUBMIT)}")
    headers = {"Cache-Control": cache, "Referrer-Policy": "no-referrer", "X-Content-Type-Options": "nosniff",
               "X-Frame-Options": "DENY", "Content-Security-Policy": "; ".join(csp)}
    if cache == "no-store":
        headers["Pragma"] = "no-cache"
    return headers


def _page(title: str, body: str) -> str:
    return (f'<!doctype html><html lang="en"><head><meta charset="utf-8"><meta name="viewport" '
            f'content="width=device-width,initial-scale=1"><meta name="referrer" content="no-referrer">'
            f"<title>{html.escape(title)}</title><style>{STYLE}</style></head><body>{body}</body></html>")


def form_post(action: str, fields: dict[str, str], form_action_origin: str) -> Reply:
    """The page that posts the session token to the portal: the token travels in a POST body, never a
    URL. A hashed script submits it; a button does it where scripts are off."""
    inputs = "".join(f'<input type="hidden" name="{html.escape(k)}" value="{html.escape(v)}">'
                     for k, v in fields.items())
    body = (f'<form id="portal-sso" method="post" action="{html.escape(action)}">{inputs}'
            "<h1>Signing you in\u2026</h1><p>If nothing happens, press the button.</p>"
            f'<button type="submit">Continue to the portal</button></form><script>{AUTO_SUBMIT}</script>')
    return Reply(200, _page("Signing you in", body),
                 headers=security_headers(form_action=form_action_origin, script=True))


def error(err: SsoError, correlation_id: str, *, portal_url: str | None = None) -> Reply:
    """The page of a failed request: what happened and what to do, the correlation id to quote; only
    what is safe to show, escaped."""
    parts = [f"<h1>{html.escape(err.title)}</h1>", f'<p class="box">{html.escape(err.message)}</p>']
    if err.shown:
        parts.append(f"<pre>{html.escape(err.shown)}</pre>")
    if err.hint:
        parts.append(f'<p class="box hint"><strong>How to fix:</strong> {html.escape(err.hint)}</p>')
    if portal_url:
        parts.append(f'<p><a href="{html.escape(portal_url)}">Back to the portal</a></p>')
    parts.append(f"<p><small>Reason: <code>{html.escape(err.reason)}</code> &middot; Correlation ID: "
                 f"<code>{html.escape(correlation_id)}</code> (quote it when you ask for help)</small></p>")
    headers = security_headers()
    if err.retry_after:
        headers["Retry-After"] = str(err.retry_after)
    return Reply(err.status, _page(err.title, "".join(parts)), headers=headers)


def redirect(location: str, cookies: list[str] | None = None) -> Reply:
    return Reply(302, "", headers={**security_headers(), "Location": location}, cookies=cookies or [])


def json_reply(payload: dict, status: int = 200, cache: str = "no-store") -> Reply:
    return Reply(status, json.dumps(payload, indent=1), "application/json", security_headers(cache=cache))
