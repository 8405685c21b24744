"""Every way a request can fail, as data: HTTP status, a reason code for the audit row, and what a
person may be shown. The detail (first argument) goes to the log only; `shown` is safe for the page
(it is still HTML-escaped when rendered)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .accounts import Imported

# register-app as the pages show it: --resource-group and --app come before its subcommand, so a command
# copied from a page runs once RG and APP are the function app's resource group and name.
REGISTER_APP = "scripts/register-app --resource-group RG --app APP"


class SsoError(Exception):
    status = 400
    reason = "bad_request"
    title = "Sign-in failed"
    message = "The sign-in request was not valid. Please start again from the portal."
    retry_after: int | None = None

    def __init__(self, detail: str = "", *, shown: str | None = None, hint: str | None = None):
        super().__init__(detail or self.reason)
        self.detail = detail or self.reason
        self.shown = shown  # extra text that may be echoed (escaped) on the page
        self.hint = hint  # a plain-language fix, e.g. for an AADSTS code
        self.notes: tuple[str, ...] = ()  # more paragraphs for the page (escaped)
        self.actions: list[tuple[str, str]] = []  # (label, URL) links offered before the way back


# 400: the request is wrong
class MissingParameters(SsoError):
    reason = "missing_code_or_state"


class InvalidParameter(SsoError):
    reason = "invalid_parameter"


class InvalidRequest(SsoError):
    """The callback's HTTP request is not an authorization response: wrong content type, too large,
    not UTF-8."""

    reason = "invalid_request"


class UnknownState(SsoError):
    reason = "unknown_state"
    message = "This sign-in link is unknown, was already used, or has expired. Please start again from the portal."


class FlowExpired(UnknownState):
    reason = "flow_expired"


class BindingMismatch(SsoError):
    reason = "browser_binding_mismatch"
    message = ("This sign-in was started in another browser or its cookie was lost. "
               "Please start again from the portal, in the same browser.")


class IssuerMismatch(SsoError):
    reason = "authorization_response_iss_mismatch"
    message = "The sign-in answer came from an identity provider this portal does not use."


class IdpError(SsoError):
    reason = "idp_error"
    message = "The identity provider did not sign you in."


class ReturnToNotAllowed(SsoError):
    reason = "return_to_not_allowed"
    message = "The page to return to after sign-in is not allowed."


class NotFound(SsoError):
    status = 404
    reason = "not_found"
    title = "Not found"
    message = "There is no such page."


class MethodNotAllowed(SsoError):
    status = 405
    reason = "method_not_allowed"
    title = "Method not allowed"
    message = "This address does not accept that kind of request."


# 401: the identity could not be established
class RedemptionFailed(SsoError):
    status = 401
    reason = "code_redemption_failed"
    message = "The identity provider did not accept this sign-in. Please start again from the portal."


class ClientCredentialRejected(RedemptionFailed):
    """The IdP refused our own client credential (invalid_client, unauthorized_client): our problem,
    which no retry by the person fixes."""

    reason = "client_credential_rejected"
    title = "Sign-in is misconfigured"
    message = ("Sign-in to the portal is misconfigured: the identity provider does not accept the portal's own "
               "credentials. Trying again will not help. Please tell your portal administrator, quoting the ID below.")


class InvalidIdToken(SsoError):
    status = 401
    message = "The identity provider's answer could not be verified. Please start again from the portal."

    def __init__(self, check: str, detail: str = "", *, hint: str | None = None):
        super().__init__(f"ID token check '{check}' failed: {detail}" if detail else f"ID token check '{check}'",
                         hint=hint)
        self.check = check
        self.reason = f"id_token_{check}"


class NotReauthenticated(InvalidIdToken):
    """The login asked for prompt=login, and the ID token's auth_time does not show a sign-in since it
    started: the prompt was taken out of the IdP's URL (the person can edit it), or the IdP ignored it."""

    message = ("This sign-in had to ask for your password again, and the identity provider's answer does not "
               "show that it did. Please start again from the portal.")

    def __init__(self, detail: str, *, hint: str | None = None):
        super().__init__("auth_time", detail, hint=hint)


# 403: authenticated, but may not enter
class Forbidden(SsoError):
    status = 403
    title = "Access denied"


class NoEmailClaim(Forbidden):
    reason = "no_email_claim"
    message = ("Your sign-in did not include an email address, so no portal account can be found. "
               "An administrator must add the 'email' optional claim to the app registration.")


class MalformedEmail(Forbidden):
    """An email address no account may have (shared/accounts.py `email_key`): not NFC, whitespace,
    control or format characters, a lone surrogate, not one '@' with text on both sides. The detail
    says what is wrong without echoing the address."""

    reason = "email_malformed"
    message = ("The email address your identity provider sent is not one a portal account can have "
               "(it holds spaces, invisible or control characters, or is not a single address). "
               "Ask your administrator to check your email address in the directory.")


class NoAccount(Forbidden):
    reason = "no_account"
    message = "There is no portal account of this kind for your email address. Ask your portal administrator."


# Added to a no_account failure's detail when the person has an account of the other kind: the setup
# page reads it to tell a person at the wrong door (their own mistake) from a missing account.
WRONG_DOOR = "has an account of the other kind"


class AccountDisabled(Forbidden):
    reason = "account_disabled"
    message = "Your portal account is disabled. Ask your portal administrator."


class TenantNotAllowed(Forbidden):
    reason = "tenant_not_allowed"
    message = "People of your organization may not sign in to this portal."


class EmailUnverified(Forbidden):
    reason = "email_unverified"
    message = "Your identity provider says your email address is not verified, so it cannot be used to sign in."


class RoleNotAssigned(Forbidden):
    reason = "role_not_assigned"

    def __init__(self, detail: str = "", *, kind: str, role: str):
        super().__init__(detail, hint=(
            f"An administrator assigns the app role {role} to you (or to a group of yours): "
            f"{REGISTER_APP} assign --kind {kind} --user <your sign-in name>, "
            f"or in Entra ID > Enterprise applications > the app > Users and groups > Add user/group, role {role}. "
            "Then sign in again."))
        self.message = (f"You are signed in, but you have not been given access to the portal as {_a(kind)} "
                        f"(the app role {role} is not assigned to you).")


# The article goes by sound, not by letter ("a user"), so each of the fixed KINDS has its own.
_WITH_ARTICLE = {"user": "a user", "agent": "an agent"}


def _a(kind: str) -> str:
    return _WITH_ARTICLE[kind]


class IdentityMismatch(Forbidden):
    reason = "identity_mismatch"
    message = ("This portal account is linked to another person's identity. "
               "If you believe this is wrong, ask your portal administrator to unlink it.")


# 5xx: our side
class DependencyUnavailable(SsoError):
    status = 503
    reason = "dependency_unavailable"
    title = "Temporarily unavailable"
    message = "Sign-in is temporarily unavailable. Please try again in a minute."
    # Once a callback has spent its flow (the marker consumed), the same callback can never complete:
    # trying again is a new sign-in (shared/login.py).
    message_flow_spent = ("Sign-in is temporarily unavailable, and this sign-in cannot be finished. Please start "
                          "again from the portal in a minute.")
    retry_after = 30
    # Set by shared.accounts for tools/accounts.py: `add` wrote its row but its check after the write
    # did not run to its end; `import_rows` had written what `imported` counts when storage failed.
    unchecked_write: bool = False
    imported: Imported | None = None

    def __init__(self, dependency: str, detail: str = ""):
        super().__init__(f"{dependency}: {detail}")
        self.dependency = dependency
        self.reason = f"{dependency}_unavailable"


@dataclass(frozen=True)
class Problem:
    """One thing wrong with the settings: the setting it is about ("" when it is about no single
    setting), what is wrong, and how to fix it. Names and fixes only, never a setting's value."""

    setting: str
    text: str
    fix: str = ""

    def __str__(self) -> str:
        return " ".join(part for part in (f"{self.setting}:" if self.setting else "", self.text, self.fix) if part)


class ConfigurationError(SsoError):
    """Settings are missing or wrong. `problems` names every one, with its fix; the names of settings
    are safe to show (never their values). A plain string is a problem about no single setting."""

    status = 500
    reason = "configuration_error"
    title = "Sign-in is not configured"
    message = "Sign-in is not configured correctly. An administrator must fix these settings:"

    def __init__(self, problems: list[Problem | str]):
        self.problems = [p if isinstance(p, Problem) else Problem("", p) for p in problems]
        super().__init__("; ".join(map(str, self.problems)))
        self.shown = "\n".join(map(str, self.problems))


class IdpMetadataInvalid(ConfigurationError):
    """The IdP's discovery document is not one we can use safely (only `none`/HS256 for ID tokens, an
    issuer that is not the one asked, endpoints that are not https): the IdP's fault, or the wrong
    IdP; no setting of ours makes it safe. 502: an upstream answered with something unusable."""

    status = 502
    reason = "idp_metadata_invalid"
    title = "The identity provider is misconfigured"
    message = ("The identity provider's metadata cannot be used safely, so no one can sign in until the identity "
               "provider (or the issuer address it is reached at) is fixed. Details for the administrator:")


class InternalError(SsoError):
    """A bug of ours. The traceback goes to the log; the page shows only the correlation id."""

    status = 500
    reason = "internal_error"
    title = "Something went wrong"
    message = "Sign-in failed because of an error on our side. Please try again; if it persists, quote the ID below."


class ResponseModeNotAllowed(SsoError):
    """A GET callback carrying a code: query mode, which puts the code in a URL (history, request logs)."""

    reason = "response_mode_not_allowed"
    message = ("This sign-in answer came back in a web address, which this portal does not accept. "
               "Please start again from the portal.")


class LoginNotNavigation(SsoError):
    """A login start that is not a top-level navigation (an <img>, a fetch, a frame): it could never
    show the IdP's page, and each start takes a cookie slot of the browser's logins in flight."""

    reason = "login_not_navigation"
    message = "A sign-in must be started by opening the portal's sign-in link."
