"""What the setup page shows about directory sync: off/on (or a setting error), the tenant URL to
paste into Entra, the last SCIM request recorded (a write or a refusal; reads that succeed are not
recorded) and its outcome, how many people and provisioned accounts,
and the people with no portal role. No SCIM library is imported here."""

from __future__ import annotations

import html
from dataclasses import dataclass, field

from ..config import KIND_ROLES, looks_like_a_token, public_base_url, valid_public_base
from ..diagnostics import failure_text
from ..errors import REGISTER_APP, DependencyUnavailable, Problem
from ..tables import ACCOUNTS_TABLE, DIRECTORY_EVENTS_TABLE, SCIM_USERS_TABLE, storage_errors
from .auth import SETTINGS_FIRST, read_config, secret_name
from .events import DirectoryEvents

MAX_LISTED = 20  # people without a portal role named on the page; the count says how many in all


@dataclass
class SyncStatus:
    # "off", "on", "error", "unavailable" (Key Vault unreachable: the token read before serves) or
    # "waiting" (the sign-in settings do not load, so the token is not read: their rows name each problem)
    state: str
    tenant_url: str
    source: str = ""
    problems: list[Problem] = field(default_factory=list)  # its settings' (read_config), or why none were read
    last: dict | None = None
    people: int | None = None
    accounts: int | None = None
    without_role: list[str] = field(default_factory=list)
    without_role_count: int = 0
    unavailable: str = ""


def sync_status(runtime, correlation_id: str = "") -> SyncStatus:
    """What the section shows; a failure of any kind is shown, never raised (the setup page always
    answers): an unexpected one with the correlation id of its logged traceback."""
    env = runtime.env
    base = public_base_url(env)
    # Only a base the settings accept: anything else is a problem the settings row names, and may be a
    # secret pasted there.
    status = SyncStatus(state="off", tenant_url=f"{base}/api/scim/v2" if valid_public_base(base) else "")
    try:
        config = read_config(runtime)
    except DependencyUnavailable as exc:
        # An outage, not a setting to fix: Entra's requests go on with the token read before (RELIABILITY.md),
        # and the rows below come from Table Storage.
        status.state, status.problems = "unavailable", [Problem("", failure_text("the SCIM token", exc,
                                                                                  correlation_id))]
        config = None
    except Exception as exc:
        status.state, status.problems = "error", [Problem("", failure_text("directory sync settings", exc,
                                                                           correlation_id))]
        return status
    if config is not None:
        status.source = config.source
        if config.problems:
            # Only the repeat that the settings do not load is not a problem of its own: each is counted
            # on its own Settings row already.
            own = any(problem.text != SETTINGS_FIRST for problem in config.problems)
            status.state, status.problems = "error" if own else "waiting", list(config.problems)
        elif config.tokens:
            status.state = "on"
    try:
        tables = runtime.tables
        status.last = DirectoryEvents(tables.client(DIRECTORY_EVENTS_TABLE)).latest()
        with storage_errors():
            people = list(tables.client(SCIM_USERS_TABLE).query_entities(
                "PartitionKey eq 'P'", select=["UserName", "HasPortalRole"]))
            rows = list(tables.client(ACCOUNTS_TABLE).query_entities("ScimId gt ''", select=["MovedTo"]))
    except Exception as exc:
        status.unavailable = failure_text("directory sync state", exc, correlation_id)
        return status
    status.people = len(people)
    status.accounts = sum(1 for row in rows if not row.get("MovedTo"))
    lacking = sorted(str(p.get("UserName") or "") for p in people if p.get("HasPortalRole") is not True)
    status.without_role_count, status.without_role = len(lacking), lacking[:MAX_LISTED]
    return status


def _secret_shown(name: str) -> str:
    """The token's Key Vault secret, as HTML: by its name, unless that looks like a token pasted there."""
    return "the Key Vault secret <code>SCIM_TOKEN_NAME</code> names" if looks_like_a_token(name) else \
        f"Key Vault secret <code>{html.escape(name)}</code>"


def setup_section(runtime, correlation_id: str = "", status: SyncStatus | None = None) -> str:
    """The setup page's "Directory sync" section, as HTML (every value escaped); of `status` when the
    caller has read it already (the page's summary counts its state), so the tables are read once."""
    s = status or sync_status(runtime, correlation_id)
    e = html.escape
    label = {"off": ("warn", "off"), "on": ("ok", "on"), "error": ("fail", "setting error"),
             "unavailable": ("warn", "Key Vault unreachable"), "waiting": ("none", "not checked")}[s.state]
    rows = [f'<tr><td><span class="st {label[0]}">{label[1]}</span></td><th>Directory sync</th><td>'
            + (f"token from {e(s.source)}" if s.state == "on" else
               "; ".join(e(str(p)) for p in s.problems) if s.state in ("error", "unavailable", "waiting") else
               "no SCIM token: set <code>SCIM_TOKEN</code> locally, or run "
               f"<code>{e(REGISTER_APP)} provisioning</code> ({_secret_shown(secret_name(runtime.env))}).")
            + "</td></tr>"]
    if s.tenant_url:
        rows.append(f'<tr><td></td><th>Tenant URL</th><td><code class="copy">{e(s.tenant_url)}</code> '
                    "(Enterprise applications &gt; the app &gt; Provisioning &gt; Admin Credentials: offered only "
                    "for an app made from Entra's non-gallery template, as register-app makes it; a plain app "
                    "registration has no Provisioning, and <code>"
                    f"{e(REGISTER_APP)} --new-registration</code> moves the function app to one that has)</td></tr>")
    if s.last:
        at = s.last.get("At")
        # A refusal's detail says what to do (e.g. unlink an account Entra's re-created person cannot take).
        status = s.last.get("Status")
        detail = str(s.last.get("Detail") or "") if isinstance(status, int) and status >= 400 else ""
        refused = f": {e(detail)}" if detail else ""
        rows.append("<tr><td></td><th>Last write or refused request</th>"
                    f"<td>{e(str(s.last.get('Operation', '')))} &rarr; "
                    f"{e(str(s.last.get('Status', '')))} {e(str(s.last.get('Reason', '')))}"
                    f"{f' at {e(at.isoformat())}' if at else ''}{refused}</td></tr>")
    if s.people is not None:
        rows.append(f"<tr><td></td><th>People and accounts</th><td>{s.people} people, {s.accounts} provisioned "
                    "accounts</td></tr>")
        names = ", ".join(f"<code>{e(n)}</code>" for n in s.without_role)
        more = f" and {s.without_role_count - len(s.without_role)} more" if s.without_role_count > len(s.without_role) \
            else ""
        rows.append(f"<tr><td></td><th>No portal role</th><td>{s.without_role_count}"
                    f"{': ' + names + more if names else ''} (assign {' or '.join(map(e, KIND_ROLES.values()))}, or "
                    "set <code>SCIM_DEFAULT_KIND</code>)</td></tr>")
    if s.unavailable:
        # Not "Table Storage": settings that do not load end here too (runtime.tables needs them).
        rows.append(f"<tr><td></td><th>People and accounts</th><td>not read: {e(s.unavailable)}</td></tr>")
    return "<h2>Directory sync (SCIM)</h2><table>" + "".join(rows) + "</table>"
