"""Who may enter, from the validated ID token's claims (SPEC "Who may enter"): the tenant, an email
claim, its verification flag, the kind's app role. Every check fails closed: a claim of an unexpected
JSON type counts as absent or as "no", never as "yes"."""

from __future__ import annotations

from .config import KIND_ROLES
from .errors import EmailUnverified, NoEmailClaim, RoleNotAssigned, TenantNotAllowed

VERIFICATION_CLAIMS = ("xms_edov", "email_verified")


def check_admission(claims: dict, kind: str, settings) -> None:
    """Raises the Forbidden error of the first check that fails."""
    tid = claims.get("tid") if isinstance(claims.get("tid"), str) else ""
    if settings.allowed_tenant_ids is not None and tid.lower() not in settings.allowed_tenant_ids:
        raise TenantNotAllowed(f"tenant {tid!r} is not allowed")
    # The email before its flag: Entra sends xms_edov only with the email claim, so a token without
    # one (the optional claim not added) lacks both, and is the registration to fix, not a verification.
    if not _has_email(claims):
        raise NoEmailClaim("no email claim in the ID token")
    check_email_verified(claims, required=settings.require_email_verified)
    if settings.app_roles_required:
        check_role(claims, kind)


def _has_email(claims: dict) -> bool:
    email = claims.get("email")
    return isinstance(email, str) and bool(email.strip())


def check_email_verified(claims: dict, *, required: bool) -> None:
    """Only JSON `true` verifies: `"true"`, `1`, `"0"`, `""`, `[]` or `null` in either claim refuses the
    token whatever the setting (an IdP that sends such a value is not saying "verified"); with
    `required`, a token carrying neither claim is refused too."""
    present = {name: claims[name] for name in VERIFICATION_CLAIMS if name in claims}
    odd = [name for name, value in present.items() if value is not True]
    if odd:
        raise EmailUnverified(f"{', '.join(odd)} present and not JSON true")
    if required and not present:
        raise EmailUnverified("the token carries neither xms_edov nor email_verified (REQUIRE_EMAIL_VERIFIED_CLAIM)")


def check_role(claims: dict, kind: str) -> None:
    role = KIND_ROLES[kind]
    roles = claims.get("roles")
    if not isinstance(roles, list) or role not in [r for r in roles if isinstance(r, str)]:
        raise RoleNotAssigned(f"app role {role} not in the token's roles", kind=kind, role=role)
