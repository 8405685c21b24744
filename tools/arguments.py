"""Argument types for the admin commands: a value Azure or the app would refuse later (a URL the app
cannot start with, a secret that expired before it was made) is refused on the command line, before
anything is created, with what to give instead."""

from __future__ import annotations

import argparse
import re
from collections.abc import Callable

from shared.config import origin_of, valid_https_url

MAX_SECRET_DAYS = 730  # the longest lifetime Entra's portal offers a client secret (24 months)


def https_url(value: str) -> str:
    if not valid_https_url(value):
        raise argparse.ArgumentTypeError(f"{value!r} is not an https:// URL (e.g. https://portal.contoso.com/sso)")
    return value


def https_origin(value: str) -> str:
    if not valid_https_url(value, origin_only=True):
        raise argparse.ArgumentTypeError(f"{value!r} is not an https:// origin: scheme, host and port only, "
                                         "e.g. https://sso.contoso.com")
    return origin_of(value)  # 'https://SSO.contoso.test:443/?' is https://sso.contoso.test


def whole_number(low: int, high: int | None = None) -> Callable[[str], int]:
    """An int from `low` to `high` (inclusive; no upper bound when None)."""
    span = f"from {low} to {high}" if high is not None else f"{low} or more"

    def parse(value: str) -> int:
        try:
            number = int(value)
        except ValueError:
            number = None
        if number is None or number < low or (high is not None and number > high):
            raise argparse.ArgumentTypeError(f"{value!r} is not a whole number {span}")
        return number
    return parse


class AzureName:
    """A kind of Azure resource name and Azure's rule for it (Azure Resource Manager's "Naming rules and
    restrictions for Azure resources"): as an argparse type it refuses a name Azure would refuse, and
    `problem` says what is wrong with a derived one, so deploy stops before it creates anything."""

    def __init__(self, what: str, pattern: str, rule: str):
        self.what, self.pattern, self.rule = what, re.compile(pattern), rule

    def problem(self, value: str) -> str | None:
        return None if self.pattern.fullmatch(value) else f"{value!r} is not a valid {self.what} name ({self.rule})"

    def __call__(self, value: str) -> str:
        if problem := self.problem(value):
            raise argparse.ArgumentTypeError(problem)
        return value


# Function app names are ASCII here (Azure also takes characters that map to Punycode, rarely wanted).
FUNCTION_APP = AzureName("function app", r"[A-Za-z0-9][A-Za-z0-9-]{0,58}[A-Za-z0-9]",
                         "2 to 60 letters, digits and hyphens, not starting or ending with a hyphen")
STORAGE_ACCOUNT = AzureName("storage account", r"[a-z0-9]{3,24}", "3 to 24 lower-case letters and digits")
KEY_VAULT = AzureName("Key Vault", r"(?!.*--)[A-Za-z][A-Za-z0-9-]{1,22}[A-Za-z0-9]",
                      "3 to 24 letters, digits and hyphens, starting with a letter, not ending with a hyphen, "
                      "no two hyphens in a row")
WORKSPACE = AzureName("Log Analytics workspace", r"[A-Za-z0-9][A-Za-z0-9-]{2,61}[A-Za-z0-9]",
                      "4 to 63 letters, digits and hyphens, not starting or ending with a hyphen")
RESOURCE_GROUP = AzureName("resource group", r"[-\w.()]{0,89}[-\w()]",
                           "1 to 90 letters, digits, underscores, hyphens, periods and parentheses, not ending "
                           "with a period")


def names(app: str) -> dict[str, str]:
    """Resource names derived from the app's (a valid function app name), each cut to what Azure allows
    (the rules above); a name that already fitted stays as earlier deploys made it. Here, not in
    deploy.py, so that register-app does not load what the deploy needs (cryptography, the Tables SDK)."""
    plain = re.sub(r"[^a-z0-9]", "", app.lower())
    return {"storage": (plain[:20] + "stor")[:24], "vault": re.sub(r"-{2,}", "-", app[:21].rstrip("-") + "-kv"),
            "workspace": app[:58].rstrip("-") + "-logs", "insights": f"{app}-insights"}
