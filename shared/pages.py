"""What the SSO endpoints send back, as host-neutral `Reply` values: the form_post page that hands
the session token to the portal, error pages, redirects; and the security headers they all carry."""

from __future__ import annotations

import base64
import hashlib
import html
import json
from dataclasses import dataclass, field

from .config import KIND_ROLES, origin_of
from .errors import REGISTER_APP, SsoError

# Sizes in rem, so browser zoom and a larger default font scale everything; code at 1rem (a bare
# `monospace` family would fall back to the browser's 13px); long values wrap instead of scrolling.
STYLE = ("body{font-family:system-ui,sans-serif;max-width:40rem;margin:3rem auto;padding:0 1rem;color:#1b1b1b;"
         "line-height:1.5}h1{font-size:1.4rem}.box{border-left:4px solid #c50f1f;padding:.5rem 1rem;"
         "background:#fdf3f4}"
         ".hint{border-left-color:#0f6cbd;background:#f0f6fc}code,pre{font-family:ui-monospace,Consolas,monospace;"
         "font-size:1rem;background:#f4f4f4;padding:.1rem .3rem;white-space:pre-wrap;overflow-wrap:anywhere}"
         ".ref{color:#404040}.actions a{display:inline-block;margin:.25rem 1rem .25rem 0}"
         "button{font-size:1rem;padding:.5rem 1rem}")
# The button is disabled once the script has sent the form: pressed while a slow portal answers, it sent
# the token again, which the portal refuses as a replay, dropping the first answer's session cookie.
AUTO_SUBMIT = 'var f=document.getElementById("portal-sso");f.submit();f.querySelector("button").disabled=true;'
# On the callback's page for a GET with nothing the server can see: an authorization response in the
# URL's fragment (response_mode rewritten to fragment by whoever started the login). The code is taken
# out of the address bar and the history entry, and only the state goes back, so that the flow dies
# (shared/login.py): nothing else of the fragment leaves the browser.
REPORT_FRAGMENT = ('var p=new URLSearchParams(location.hash.slice(1)),s=p.get("state");'
                   'if(location.hash){history.replaceState(null,"",location.pathname+location.search)}'
                   'if(s){var f=document.getElementById("fragment");f.elements.state.value=s;f.submit()}')


def _csp_hash(source: str) -> str:
    return "'sha256-" + base64.b64encode(hashlib.sha256(source.encode()).digest()).decode() + "'"


@dataclass
class Reply:
    status: int
    body: str = ""
    content_type: str = "text/html; charset=utf-8"
    headers: dict[str, str] = field(default_factory=dict)
    cookies: list[str] = field(default_factory=list)  # Set-Cookie values


def security_headers(*, form_action: str | None = None, script: str | None = None, cache: str = "no-store",
                     style: str = STYLE) -> dict:
    """Headers of every SSO response: nothing cached, no referrer (URLs may hold a code), no framing,
    and a CSP that allows only the page's own inline `style` and, on a page given its `script` (the
    form_post page's AUTO_SUBMIT, the callback's REPORT_FRAGMENT), that one script."""
    csp = ["default-src 'none'", f"style-src {_csp_hash(style)}", "frame-ancestors 'none'", "base-uri 'none'",
           f"form-action {form_action}" if form_action else "form-action 'none'"]
    if script:
        csp.append(f"script-src {_csp_hash(script)}")
    headers = {"Cache-Control": cache, "Referrer-Policy": "no-referrer", "X-Content-Type-Options": "nosniff",
               "X-Frame-Options": "DENY", "Content-Security-Policy": "; ".join(csp)}
    if cache == "no-store":
        headers["Pragma"] = "no-cache"
    return headers


def _page(title: str, body: str, style: str = STYLE, *, noindex: bool = False) -> str:
    robots = '<meta name="robots" content="noindex">' if noindex else ""
    return (f'<!doctype html><html lang="en"><head><meta charset="utf-8"><meta name="viewport" '
            f'content="width=device-width,initial-scale=1"><meta name="referrer" content="no-referrer">{robots}'
            f"<title>{html.escape(title)}</title><style>{style}</style></head><body><main>{body}</main></body></html>")


def form_post(action: str, fields: dict[str, str], *, then: str | None = None) -> Reply:
    """The page that posts the session token to the portal: the token travels in a POST body, never a
    URL. A hashed script submits it; a button does it where scripts are off. The CSP's form-action
    allows the portal's origin and that of `then`, where the portal sends the person next (the
    return_to, allow-listed at login start): Chromium applies form-action to the redirect that
    follows the POST too, and would stop a return_to on another allowed origin after the token
    was used up."""
    inputs = "".join(f'<input type="hidden" name="{html.escape(k)}" value="{html.escape(v)}">'
                     for k, v in fields.items())
    body = (f'<form id="portal-sso" method="post" action="{html.escape(action)}">{inputs}'
            "<h1>Signing you in\u2026</h1><p>If nothing happens, press the button.</p>"
            f'<button type="submit">Continue to the portal</button></form><script>{AUTO_SUBMIT}</script>')
    # The portal checks the POST's Origin, which a no-referrer page sends as "null": this page alone
    # uses strict-origin (our origin, never a path, nothing over a downgrade to http).
    page = _page("Signing you in", body).replace('content="no-referrer"', 'content="strict-origin"', 1)
    origins = " ".join(dict.fromkeys(origin_of(url) for url in (action, then) if url))
    return Reply(200, page, headers={**security_headers(form_action=origins, script=AUTO_SUBMIT),
                                     "Referrer-Policy": "strict-origin"})


def home_links(homes: dict[str, str] | None) -> list[tuple[str, str]]:
    """(label, URL) of the way back for each kind's portal home (kind -> URL): one "Back to the
    portal" when both kinds share it."""
    homes = {kind: url for kind, url in (homes or {}).items() if url}
    if len(set(homes.values())) == 1:
        return [("Back to the portal", next(iter(homes.values())))]
    return [(f"Back to the {kind} portal", url) for kind, url in homes.items()]


def _links(links: list[tuple[str, str]]) -> str:
    if not links:
        return ""
    return '<p class="actions">' + "".join(f'<a href="{html.escape(url)}">{html.escape(label)}</a>'
                                           for label, url in links) + "</p>"


def error(err: SsoError, correlation_id: str, *, portal_url: str | None = None,
          homes: dict[str, str] | None = None, report_fragment: bool = False) -> Reply:
    """The page of a failed request: what happened and what to do, the way back (the kind's portal
    home, `portal_url`, else each of `homes`), the correlation id to quote; only what is safe to show,
    escaped. `report_fragment`: with REPORT_FRAGMENT, which posts an authorization response's state
    found in the URL's fragment back to this URL."""
    parts = [f"<h1>{html.escape(err.title)}</h1>", f'<p class="box">{html.escape(err.message)}</p>']
    if err.shown:
        parts.append(f"<pre>{html.escape(err.shown)}</pre>")
    if err.hint:
        parts.append(f'<p class="box hint"><strong>How to fix:</strong> {html.escape(err.hint)}</p>')
    for note in err.notes:
        parts.append(f"<p>{html.escape(note)}</p>")
    back = [("Back to the portal", portal_url)] if portal_url else home_links(homes)
    parts.append(_links([*err.actions, *back]))
    parts.append(f'<p class="ref">Reason: <code>{html.escape(err.reason)}</code><br>Correlation ID: '
                 f"<code>{html.escape(correlation_id)}</code> (quote it when you ask for help)</p>")
    if report_fragment:
        parts.append('<form id="fragment" method="post" hidden><input type="hidden" name="state"><input '
                     f'type="hidden" name="response_mode" value="fragment"></form><script>{REPORT_FRAGMENT}</script>')
    headers = security_headers(form_action="'self'", script=REPORT_FRAGMENT) if report_fragment else \
        security_headers()
    if err.retry_after:
        headers["Retry-After"] = str(err.retry_after)
    return Reply(err.status, _page(err.title, "".join(parts)), headers=headers)


def json_error(err: SsoError, correlation_id: str) -> Reply:
    """A failure of a route that programs read (the JWKS): the same reason, message and correlation id
    as the page, as JSON; never cached, with the page's Retry-After."""
    reply = json_reply({"error": err.reason, "error_description": err.message, "correlation_id": correlation_id},
                       err.status)
    if err.retry_after:
        reply.headers["Retry-After"] = str(err.retry_after)
    return reply


def signed_out(home_url: str | None, *, idp_asked: bool = True) -> Reply:
    """Where the IdP returns after logout (the post_logout_redirect_uri): it takes nothing from the
    request, so nothing can be injected into it. `idp_asked`: logout asked the IdP to end its session
    too (it has an end_session_endpoint). Even then the page never says it ended: the IdP lets the
    person decline ("stay signed in") and still returns here, and on a shared computer the next person
    would sign in as this one."""
    said = ("You have signed out of the portal. If you also chose to sign out at your organization's sign-in, "
            "that ended too; if you did not, it is still active in this browser, and the next person to sign "
            "in here gets in as you: Close the browser if it is a shared computer." if idp_asked else
            "You have signed out of the portal. Your organization's sign-in is still active in this browser "
            "(the identity provider offers no sign-out): Close the browser if it is a shared computer, or the "
            "next person to sign in gets in as you.")
    body = (f"<h1>You are signed out</h1><p>{said}</p>"
            + _links([("Back to the portal", home_url)] if home_url else []))
    return Reply(200, _page("Signed out", body), headers=security_headers())


def redirect(location: str, cookies: list[str] | None = None) -> Reply:
    return Reply(302, "", headers={**security_headers(), "Location": location}, cookies=cookies or [])


def json_reply(payload: dict, status: int = 200, cache: str = "no-store") -> Reply:
    return Reply(status, json.dumps(payload, indent=1), "application/json", security_headers(cache=cache))


# ---- the operator's setup page (GET /api/sso/setup) -------------------------------------------------

OPS_STYLE = STYLE + (
    "body{max-width:64rem}table{border-collapse:collapse;width:100%;margin:.5rem 0 1rem}"
    "th,td{text-align:left;vertical-align:top;padding:.35rem .5rem;border-bottom:1px solid #e0e0e0}"
    "td{overflow-wrap:anywhere}"
    # Narrow (a phone, or 200% zoom): each row's cells stacked, so long names and URLs get the full width.
    "@media (max-width:48rem){table,tbody,tr,th,td{display:block}tr{border-bottom:1px solid #e0e0e0;"
    "padding:.35rem 0}th,td{border:0;padding:.1rem 0}}"
    ".copy{user-select:all;font-size:1.05rem}.st{font-weight:600;white-space:nowrap;padding:.1rem .4rem;"
    "border-radius:.25rem}.ok{background:#dff6dd;color:#0e700e}.warn{background:#fff4ce;color:#835c00}"
    ".fail{background:#fde7e9;color:#a4262c}.none{background:#f0f0f0;color:#555}"
    ".summary{padding:.75rem 1rem;border-radius:.25rem}dt{font-weight:600;margin-top:.5rem}"
)
KIND_NAMES = (("user", "User"), ("agent", "Agent"))
_LEVEL_LABELS = {"ok": "OK", "warn": "Warning", "fail": "Problem", "none": "Not checked"}


def _status(level: str) -> str:
    return f'<span class="st {level}">{_LEVEL_LABELS[level]}</span>'


def _aadsts_links(codes) -> str:
    return " ".join(f'<a href="#AADSTS{int(c)}">AADSTS{int(c)}</a>' for c in codes)


def _check_rows(checks) -> str:
    rows = []
    for check in checks:
        notes = []
        if check.warning:
            notes.append(f"<strong>{html.escape(check.warning)}</strong>")
        if check.level == "fail" and check.fix:
            notes.append(f"<strong>Fix:</strong> {html.escape(check.fix)}")
        if check.aadsts and check.level in ("fail", "warn"):
            notes.append(f"See {_aadsts_links(check.aadsts)}")
        rows.append(f"<tr><td>{_status(check.level)}</td><th>{html.escape(check.title)}</th>"
                    f"<td>{html.escape(check.detail)}{''.join(f'<br>{n}' for n in notes)}</td></tr>")
    return "<table>" + "".join(rows) + "</table>"


def _app_roles(required: bool | None) -> str:
    """The setup page's app roles: each door's role (config.KIND_ROLES), whether sign-in requires it,
    and how to assign it. `required` None: APP_ROLES_REQUIRED is not known (the settings do not load)."""
    rows = "".join(f"<tr><th><code>{html.escape(role)}</code></th><td>lets a person in at the {kind} door "
                   f"(<code>/api/sso/{kind}/login</code>) and gives directory sync's {kind} account</td></tr>"
                   for kind, role in KIND_ROLES.items())
    state = {True: "is on: a person without the door's app role in the token's <code>roles</code> claim is "
                   "refused (403 <code>role_not_assigned</code>).",
             False: "is off: the roles are not checked at sign-in (user assignment, which scripts/register-app "
                    "turns on, still decides who may sign in at all); set it to <code>true</code> to require "
                    "the door's role.",
             None: "cannot be read while the settings have problems (see Settings)."}[required]
    return ("<h2>3. App roles</h2><p>In the app registration &gt; App roles (<code>scripts/register-app</code> "
            "creates both):</p>" + f"<table>{rows}</table><p><code>APP_ROLES_REQUIRED</code> {state}</p>"
            "<p>Assign people or groups under Enterprise applications &gt; the app &gt; Users and groups, or with "
            f"<code>{html.escape(REGISTER_APP)} assign --user UPN --kind user</code> (or <code>--group NAME</code>, "
            "<code>--kind agent</code>).</p>")


def setup_page(report, extra_html: str = "", extra_problems: int = 0) -> Reply:
    """The page an admin configures Entra from (a diagnostics.SetupReport): the redirect URIs to
    paste, the token configuration, the live state red/amber/green with the fix of each red, and the
    AADSTS hints. Every value is escaped; secret settings show only whether they are set.
    `extra_problems`: the red lines of `extra_html`, which the summary counts too."""
    e = html.escape
    levels = [c.level for c in report.all_checks]
    # Every bad setting counts as a problem of its own, not the one Settings line that lists them.
    fails = report.problem_count + levels.count("fail") - (report.settings_check.level == "fail") + extra_problems
    warns = levels.count("warn")
    if fails:
        summary = (f'<p class="summary fail">{fails} problem{"s" if fails != 1 else ""}'
                   f'{f", {warns} warning" + ("s" if warns != 1 else "") if warns else ""}: sign-in may not work '
                   "until each red line is fixed.</p>")
    elif warns:
        summary = f'<p class="summary warn">Working, with {warns} warning{"s" if warns != 1 else ""}.</p>'
    else:
        summary = '<p class="summary ok">Everything checked is working.</p>'

    def uri_cell(uri: str | None) -> str:
        return f'<code class="copy">{e(uri)}</code>' if uri else "<em>cannot be built yet</em>"

    rows = [(f"{name} Single Sign On URL", report.redirect_uris.get(kind)) for kind, name in KIND_NAMES]
    rows += [(f"{name} signed-out page", report.signed_out_uris.get(kind)) for kind, name in KIND_NAMES]
    uri_rows = "".join(f"<tr><th>{label}</th><td>{uri_cell(uri)}</td></tr>" for label, uri in rows)
    client = f" (client ID <code>{e(report.client_id)}</code>)" if report.client_id else ""
    setting_rows = "".join(
        f"<tr><td>{_status('fail' if problem else 'ok') if name else _status('fail')}</td>"
        f"<th>{e(name)}</th><td>{e(value)}{f'<br><strong>{e(problem)}</strong>' if problem else ''}</td></tr>"
        for name, value, problem in report.settings_rows)
    hints = "".join(f'<dt id="AADSTS{int(code)}">AADSTS{int(code)}</dt><dd>{e(text)}</dd>'
                    for code, text in sorted(report.hints.items()))

    body = (
        "<h1>Portal SSO setup</h1>" + summary
        + "<h2>1. Redirect URIs</h2>"
        f"<p>In Entra ID &gt; App registrations &gt; your app{client} &gt; Authentication &gt; Web &gt; "
        "Redirect URIs, add all four, exactly as shown: each kind's callback, and its signed-out page, where "
        "Entra returns after a logout (it returns only to a registered redirect URI).</p>"
        f"<table>{uri_rows}</table>"
        + (f"<p><small>{e(report.redirect_note)}</small></p>" if report.redirect_note else "")
        + "<h2>2. Token configuration</h2>"
        "<p>In the same app registration, Token configuration &gt; Add optional claim:</p><ul>"
        "<li><strong>ID</strong> token: <code>email</code> (required: accounts are found by email). When Entra "
        "asks, turn on the Microsoft Graph <code>email</code> permission.</li>"
        "<li><strong>Access</strong> token: <code>email</code>.</li>"
        "<li><strong>ID</strong> token: <code>xms_edov</code> (required while <code>REQUIRE_EMAIL_VERIFIED_CLAIM"
        "</code> is true, the default: it tells whether the email's domain is verified; a token without it, or "
        "saying it is not, is refused).</li>"
        "<li><strong>ID</strong> token: <code>auth_time</code> (required for <code>prompt=login</code>: it shows "
        "the password was asked again; a login with that prompt and a token without it is refused).</li></ul>"
        + _app_roles(report.app_roles_required)
        + "<h2>4. Live state</h2>" + _check_rows([report.settings_check, *report.checks])
        + "<h2>5. Last sign-ins</h2>" + _check_rows(report.sign_ins)
        + extra_html  # sections other modules build, already escaped (directory sync: shared/scim/status.py)
        + "<h2>6. Settings</h2><table>" + setting_rows + "</table>"
        + "<h2>7. Entra (AADSTS) errors and their fixes</h2><dl>" + hints + "</dl>"
    )
    return Reply(200, _page("Portal SSO setup", body, OPS_STYLE, noindex=True),
                 headers=security_headers(style=OPS_STYLE))
