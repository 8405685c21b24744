"""Argument types for the admin commands: a value Azure or the app would refuse later (a URL the app
cannot start with, a secret that expired before it was made) is refused on the command line, before
anything is created, with what to give instead."""

from __future__ import annotations

import argparse
from collections.abc import Callable

from shared.config import valid_https_url

MAX_SECRET_DAYS = 730  # the longest lifetime Entra's portal offers a client secret (24 months)


def https_url(value: str) -> str:
    if not valid_https_url(value):
        raise argparse.ArgumentTypeError(f"{value!r} is not an https:// URL (e.g. https://portal.contoso.com/sso)")
    return value


def https_origin(value: str) -> str:
    if not valid_https_url(value, origin_only=True):
        raise argparse.ArgumentTypeError(f"{value!r} is not an https:// origin: scheme, host and port only, "
                                         "e.g. https://sso.contoso.com")
    return value.rstrip("/")


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
