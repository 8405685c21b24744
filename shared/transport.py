"""How the app's outbound HTTP clients are set up: the options of the Azure SDK clients (Table Storage,
Key Vault) and the session of every IdP call. The environment is read once per worker, never per call."""

from __future__ import annotations

import os
import urllib.request
from collections.abc import Mapping
from urllib.parse import urlsplit

import requests
from azure.core.pipeline.transport import RequestsTransport
from requests.hooks import default_hooks
from requests.models import PreparedRequest
from urllib3.util.retry import Retry

# A browser is waiting: a dead dependency must become a 503 in seconds (values argued in RELIABILITY.md).
# The read timeout sits just above the longest Azure lets a table query page run (5 s; a single-entity
# operation is meant to take under 2 s), so no legitimate answer is cut. `timeout` is the SDK's budget
# per operation: no new attempt starts once that much time has gone, so quick failures (a refused or
# reset connection) get their two retries, and a connection that swallows requests without a word (a
# silently dropped pooled connection) costs one read timeout, not three.
READ_TIMEOUT = 6
RETRIES = {"retry_total": 2, "retry_backoff_factor": 0.2, "timeout": READ_TIMEOUT}
TIMEOUTS = {"connection_timeout": 3, "read_timeout": READ_TIMEOUT}
IDP_CONNECT_TIMEOUT = 5.0  # a refused connection fails at once; this bounds a silent one (no SYN-ACK)


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


class StorageSession(requests.Session):
    """The `requests` session under the Table Storage clients. Storage answers neither with cookies nor
    redirects, and the SDK sets every header it needs: so a request is prepared from its own arguments
    and handed to the adapter, without `requests.Session`'s per-call merging of session headers,
    cookies, auth, hooks and settings (~0.11 ms of CPU per table call, 12% of a point read's client
    CPU). The adapter (and so every timeout, error and the SDK's retries) is the usual one."""

    def __init__(self, environ: Mapping[str, str] = os.environ):
        super().__init__()
        self.trust_env = False
        self.verify = ca_bundle(environ)
        # As azure-core mounts on a session it makes itself: urllib3's own retries and redirects off (the
        # SDK's retry policy is the only one).
        adapter = requests.adapters.HTTPAdapter(max_retries=Retry(total=False, redirect=False, raise_on_status=False))
        for prefix in ("http://", "https://"):
            self.mount(prefix, adapter)

    def request(self, method, url, params=None, data=None, headers=None, cookies=None, files=None, auth=None,
                timeout=None, allow_redirects=True, proxies=None, hooks=None, stream=None, verify=None,
                cert=None, json=None):
        prepared = PreparedRequest()
        prepared.prepare(method=method.upper(), url=url, headers=headers, files=files, data=data, json=json,
                         params=params, auth=auth, cookies=cookies, hooks=default_hooks())
        response = self.get_adapter(url).send(
            prepared, stream=bool(stream), timeout=timeout, verify=self.verify if verify is None else verify,
            cert=cert if cert is not None else self.cert, proxies=proxies or self.proxies)
        if not stream:
            response.content  # noqa: B018 -- read now, as requests.Session.send does: inside the SDK's error mapping
        return response


def azure_transport(environ: Mapping[str, str] = os.environ) -> RequestsTransport:
    """The SDK's own requests transport (its error mapping, timeouts and retries unchanged) over a
    StorageSession, with the timeouts and CA bundle of azure_client_options."""
    return RequestsTransport(session=StorageSession(environ), session_owner=True, **TIMEOUTS,
                             connection_verify=ca_bundle(environ))


class IdpSession(requests.Session):
    """The session of every IdP call (discovery, JWKS, MSAL's token request). Every request gets
    the timeouts unless it names its own: MSAL does not apply its `timeout` to an http_client handed
    to it, so without this a token endpoint that accepts the connection and never answers would
    hold the callback, and the worker thread, for as long as the IdP likes. The environment (CA
    bundle, proxies) is read once here: with `trust_env` on, `requests` re-reads it on every call."""

    def __init__(self, read_timeout: float, environ: Mapping[str, str] = os.environ):
        super().__init__()
        self.trust_env = False
        self.verify = ca_bundle(environ)
        self.timeout = (min(IDP_CONNECT_TIMEOUT, read_timeout), read_timeout)
        self._proxies = {k: v for k, v in _environ_proxies(environ).items() if k in ("http", "https", "no")}

    def request(self, method, url, *args, **kwargs):
        if kwargs.get("timeout") is None:
            kwargs["timeout"] = self.timeout
        if self._proxies and not kwargs.get("proxies"):
            host = urlsplit(url).hostname or ""
            if not urllib.request.proxy_bypass_environment(host, self._proxies):
                kwargs["proxies"] = {k: v for k, v in self._proxies.items() if k != "no"}
        return super().request(method, url, *args, **kwargs)


def _environ_proxies(environ: Mapping[str, str]) -> dict[str, str]:
    """HTTP(S)_PROXY and NO_PROXY as `requests` would read them (lower case wins), once."""
    found: dict[str, str] = {}
    for name, value in environ.items():
        lowered = name.lower()
        if value and lowered.endswith("_proxy") and (lowered == name or lowered[:-6] not in found):
            found[lowered[:-6]] = value
    return found
