"""Benchmark: how fast a login completes and whether memory grows with logins.

Starts Azurite and the dev IdP, serves function_app.py in-process over HTTPS, and signs the demo user
in N times (login start, the IdP's login page, the form_post callback). Prints the latency of our two
endpoints (the IdP's own pages are not counted), the JWKS fetches, and the process's memory growth
per login (the MSAL token cache is replaced by one that keeps nothing, so growth should stay near 0).

    .venv/bin/python -m tools.bench_login [--logins 200]
"""

from __future__ import annotations

import argparse
import gc
import os
import statistics
import tempfile
import time
import tracemalloc
from pathlib import Path

import requests
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from shared.runtime import Runtime, reset_runtime

from .host import build_wsgi_app, serve_in_thread
from .idp_login import sign_in_at_idp
from .stack import (
    entra_person,
    free_port,
    idp_config,
    make_ca,
    start_azurite,
    start_idp,
    trust_env,
)

TENANT = "11111111-2222-4333-8444-555555555555"
CLIENT_ID, SECRET = "bench-client", "bench-secret"


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--logins", type=int, default=200)
    args = parser.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="bench-login-"))
    ca = make_ca(work / "ca")
    os.environ.update(trust_env(ca))
    os.environ.pop("CURL_CA_BUNDLE", None)
    app_port = free_port()
    base = f"https://127.0.0.1:{app_port}"
    person = entra_person("user@contoso.test", "pw", name="Bench User", oid="0c1f6b0e-2b8e-4f5a-9d51-7a3e1f2c9b01",
                          tenant=TENANT)
    client = {"client_id": CLIENT_ID, "client_secret": SECRET, "token_endpoint_auth_method": "client_secret_post",
              "redirect_uris": [f"{base}/api/sso/user/callback"]}
    azurite = start_azurite(workdir=work)
    idp = start_idp(idp_config(ca, port=free_port(), tenant=TENANT, clients=[client], people=[person]), workdir=work)
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()).decode()
    runtime = Runtime({"OIDC_ISSUER_URL": idp.url, "OIDC_CLIENT_ID": CLIENT_ID, "OIDC_CLIENT_SECRET": SECRET,
                       "SESSION_SIGNING_KEY": key, "TABLES_CONNECTION_STRING": azurite.connection_string,
                       "PORTAL_USER_URL": "https://127.0.0.1:9/user", "PORTAL_AGENT_URL": "https://127.0.0.1:9/agent",
                       "PUBLIC_BASE_URL": base})
    reset_runtime(runtime)
    import function_app

    server = serve_in_thread(build_wsgi_app(function_app.app), port=app_port,
                             ssl_context=(str(ca.server_cert), str(ca.server_key)))
    runtime.accounts.add("user@contoso.test", "user", "U-1", "Bench User")
    starts, callbacks = [], []
    try:
        session = requests.Session()
        for number in range(args.logins + 10):
            if number == 10:  # warmed up: discovery, MSAL app, JWKS, table clients exist
                gc.collect()
                tracemalloc.start()
                baseline = tracemalloc.take_snapshot()
            t0 = time.perf_counter()
            started = session.get(f"{base}/api/sso/user/login", allow_redirects=False, timeout=20)
            t1 = time.perf_counter()
            action, fields = sign_in_at_idp(session, started.headers["Location"], "user@contoso.test", "pw")
            t2 = time.perf_counter()
            done = session.post(action, data=fields, allow_redirects=False, timeout=20)
            t3 = time.perf_counter()
            assert done.status_code == 200, done.text[:300]
            if number >= 10:
                starts.append((t1 - t0) * 1000)
                callbacks.append((t3 - t2) * 1000)
        gc.collect()
        diff = tracemalloc.take_snapshot().compare_to(baseline, "filename")
        growth = sum(s.size_diff for s in diff)
        top = sorted(diff, key=lambda s: -s.size_diff)[:3]
        tracemalloc.stop()
    finally:
        server.stop()
        idp.stop()
        azurite.stop()
    print(f"logins: {args.logins} (after 10 warm-up), 2 cores, Azurite + oidc-provider on loopback, HTTPS")
    timed = (("login start (302 to IdP)", starts), ("callback (redeem, validate, account, token)", callbacks))
    for name, values in timed:
        print(f"  {name:45s} p50 {statistics.median(values):6.1f} ms   p95 {percentile(values, 95):6.1f} ms   "
              f"max {max(values):6.1f} ms")
    print(f"  JWKS fetches: {runtime.idp_keys().fetch_count}; "
          f"client secret reads: {runtime.cached_client_credential.reads}")
    print(f"  Python heap growth over {args.logins} logins: {growth / 1024:.1f} KiB "
          f"({growth / args.logins:.0f} bytes per login; client and server share this process)")
    for stat in top:
        print(f"    {stat.size_diff / 1024:8.1f} KiB  {stat.traceback[0].filename}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
