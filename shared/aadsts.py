"""Plain-language fixes for the Entra ID (AADSTS) errors that admins meet when wiring the portal."""

from __future__ import annotations

import re

HINTS = {
    50011: ("The redirect URI sent does not match one registered on the app. In Entra ID > App registrations > "
            "your app > Authentication > Web, add the four redirect URIs (both Single Sign On URLs, both "
            "signed-out pages) exactly as the setup page shows them."),
    50105: ("The person is not assigned to the app. In Entra ID > Enterprise applications > your app > Users and "
            "groups, assign them (or turn off 'Assignment required?')."),
    65001: ("The app has not been granted consent ('Need admin approval'). An administrator (Privileged Role, "
            "Cloud Application or Application Administrator) grants admin consent: scripts/register-app does it, "
            "or Entra ID > App registrations > your app > API permissions > Grant admin consent."),
    700016: ("The client ID is not known in this tenant. Check OIDC_CLIENT_ID is the 'Application (client) ID' "
             "and OIDC_ISSUER_URL names the tenant where the app is registered."),
    7000215: ("The client secret is wrong. Copy the secret's Value (not its Secret ID) from Certificates & "
              "secrets into Key Vault."),
    7000222: ("The client secret has expired. Create a new one under Certificates & secrets and store it in "
              "Key Vault; the app picks it up without a restart."),
    90102: ("The redirect URI is not a valid URL. Check PUBLIC_BASE_URL and the URIs registered on the app."),
    700054: ("The app registration does not allow ID tokens for this flow. Check Authentication > Web "
             "settings of the app registration."),
    90094: ("The sign-in needs an administrator's consent (the tenant does not let people consent to apps). An "
            "administrator grants admin consent under API permissions (scripts/register-app does it), then the "
            "person signs in again."),
    700027: ("The client certificate's assertion was refused: the certificate in Key Vault is not one uploaded "
             "under Certificates & secrets, or it has expired. Upload its public part there."),
    7000112: ("The app's service principal is disabled in this tenant. In Entra ID > Enterprise applications > "
              "your app > Properties, set 'Enabled for users to sign-in?' to Yes."),
    500011: ("No service principal for the app in this tenant (the credential check asks a token for the app "
             "itself). Run scripts/register-app, which creates it, or consent to the app once as an administrator."),
    50020: ("The person's account is from a tenant the app does not accept. Invite them as a guest, or "
            "check the app's supported account types."),
}

_CODE = re.compile(r"AADSTS(\d{5,7})")


def aadsts_codes(*texts: object) -> list[int]:
    codes: list[int] = []
    for text in texts:
        if isinstance(text, list):
            codes.extend(c for c in text if isinstance(c, int))
        elif isinstance(text, str):
            codes.extend(int(c) for c in _CODE.findall(text))
    return list(dict.fromkeys(codes))


def hinted_code(*texts: object) -> int | None:
    """The first AADSTS code in the texts (error descriptions, error_codes lists) that HINTS has a fix for."""
    return next((code for code in aadsts_codes(*texts) if code in HINTS), None)


def hint_for(*texts: object) -> str | None:
    """The fix for the first known AADSTS code in the texts (error descriptions, error_codes lists)."""
    code = hinted_code(*texts)
    return f"AADSTS{code}: {HINTS[code]}" if code is not None else None
