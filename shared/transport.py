"""How the app's outbound HTTP clients are set up: the Azure SDK clients (Table Storage, Key Vault)
here, the IdP's session in `runtime`. Read once per worker, never per call."""

from __future__ import annotations

import os
from collections.abc import Mapping

# Few, quick retries: a browser is waiting, and a dead dependency must become a 503 in seconds.
RETRIES = {"retry_total": 2, "retry_backoff_factor": 0.2}
TIMEOUTS = {"connection_timeout": 5, "read_timeout": 10}


def ca_bundle(environ: Mapping[str, str] = os.environ) -> str | bool:
    """What TLS certificates are checked against: the bundle REQUESTS_CA_BUNDLE (or CURL_CA_BUNDLE)
    names, as `requests` would choose, else the system trust store (True). Tests and the dev stack
    trust their local CA this way."""
    return environ.get("REQUESTS_CA_BUNDLE") or environ.get("CURL_CA_BUNDLE") or True


def azure_client_options(environ: Mapping[str, str] = os.environ) -> dict:
    """Keyword arguments for an Azure SDK client. `use_env_settings=False`: `requests` would otherwise
    re-read the whole environment (proxies, .netrc, CA bundle) on every call; the CA bundle is read
    here, once, instead."""
    return {**RETRIES, **TIMEOUTS, "use_env_settings": False, "connection_verify": ca_bundle(environ)}
