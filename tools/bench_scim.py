"""The directory sync benchmark (`make bench` runs it after the login benchmark): SCIM requests per
second through tools.host (one worker, plain HTTP on loopback: no TLS cost measured) against Azurite,
for Entra's first cycle of N people (per person: a `userName eq` query, then the POST that creates
the User and its portal account) and for a second cycle that changes nothing (per person: the query
only, as Entra sends no write for a person whose attributes match). Also: the first SCIM request of a
worker (the SCIM libraries load then), and the extrapolation to a first cycle of 10,000 people.

    .venv/bin/python -m tools.bench_scim [--people 1000] [--clients 1]

Sequential (--clients 1) is the floor: Entra's provisioning sends requests to an app a few at a time.
It never fails: it prints the budgets, pass or fail, and exits 0."""

from __future__ import annotations

import argparse
import os
import platform
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from .scim_cycle import Client, Person, provision
from .stack import free_port, start_azurite

TENANT = "11111111-2222-4333-8444-555555555555"
# Budgets (BENCHMARKS.md "Directory sync"): a first cycle of 10,000 people in minutes, not hours.
BUDGET_FIRST_RPS = 20.0  # 10,000 people = 20,000 requests: <= 17 minutes
BUDGET_SECOND_RPS = 50.0
BUDGET_10K_MINUTES = 30.0


def app_env(tables: str, base: str, token: str) -> dict[str, str]:
    key = ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()).decode()
    return {"OIDC_ISSUER_URL": f"https://login.microsoftonline.com/{TENANT}/v2.0",  # never called by SCIM
            "OIDC_CLIENT_ID": str(uuid.uuid4()), "OIDC_CLIENT_SECRET": "bench", "SESSION_SIGNING_KEY": key,
            "TABLES_CONNECTION_STRING": tables, "PORTAL_USER_URL": "https://portal.example/user",
            "PORTAL_AGENT_URL": "https://portal.example/agent", "PUBLIC_BASE_URL": base, "SCIM_TOKEN": token}


def people(n: int, tag: str) -> list[Person]:
    kinds = (("agent",), ("user",), ("user", "agent"))
    return [Person(f"p{i}.{tag}@contoso.test", str(uuid.uuid4()), kinds[i % 3], f"Person {i}") for i in range(n)]


def run_cycle(clients: list[Client], work, items) -> tuple[float, list[float]]:
    """Runs work(client, item) for every item, len(clients) at a time; (seconds, per-item latencies)."""
    latencies: list[float] = []

    def one(index_item):
        index, item = index_item
        began = time.perf_counter()
        work(clients[index % len(clients)], item)
        latencies.append(time.perf_counter() - began)

    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=len(clients)) as pool:
        list(pool.map(one, enumerate(items)))
    return time.perf_counter() - started, latencies


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--people", type=int, default=1000)
    parser.add_argument("--clients", type=int, default=1)
    parser.add_argument("--markdown", type=Path, help="append the figures to this file (BENCHMARKS.md)")
    parser.add_argument("--label", default="directory sync", help="the appended section's title")
    args = parser.parse_args(argv)
    for name in ("REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE"):  # ~22 ms per new TLS connection: not ours to time
        os.environ.pop(name, None)
    work = Path(tempfile.mkdtemp(prefix="bench-scim-"))
    azurite = start_azurite(workdir=work)
    try:
        sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
        port, token = free_port(), secrets.token_urlsafe(32)
        base = f"http://127.0.0.1:{port}"
        from shared.runtime import Runtime, reset_runtime

        reset_runtime(Runtime(app_env(azurite.connection_string, base, token)))
        started = time.perf_counter()
        import function_app

        import_ms = (time.perf_counter() - started) * 1000
        from .host import build_wsgi_app, serve_in_thread

        server = serve_in_thread(build_wsgi_app(function_app.app), port=port)
        clients = [Client(base, token, verify=False) for _ in range(max(1, args.clients))]
        began = time.perf_counter()
        first = clients[0].call("GET", "/Users", filter='userName eq "warm-up"')
        first_ms = (time.perf_counter() - began) * 1000
        assert first.status_code == 200, first.text
        crowd = people(args.people, uuid.uuid4().hex[:6])

        def create(client, person):
            outcome, _ = provision(client, person)
            assert outcome == "created", outcome

        def recheck(client, person):
            assert client.find(person.email) is not None

        first_s, first_lat = run_cycle(clients, create, crowd)
        second_s, second_lat = run_cycle(clients, recheck, crowd)
        server.stop()
    finally:
        azurite.stop()
        reset_runtime(None)

    def p(values, q):
        return statistics.quantiles(values, n=100)[q - 1] * 1000 if len(values) > 1 else values[0] * 1000

    first_rps, second_rps = 2 * args.people / first_s, args.people / second_s
    ten_k_min = 10_000 / (args.people / first_s) / 60
    lines: list[str] = []

    def out(text: str) -> None:
        print(text)
        lines.append(text)

    out(f"Directory sync (SCIM) benchmark: {args.people} people, {len(clients)} client(s), one worker, "
          "tools.host over plain HTTP, Azurite")
    out(f"  import function_app (this process): {import_ms:.0f} ms; first SCIM request (libraries load): "
          f"{first_ms:.0f} ms")
    out(f"  first cycle (query + POST per person): {first_s:.1f} s, {first_rps:.0f} requests/s, "
          f"{args.people / first_s:.1f} people/s; per person p50 {p(first_lat, 50):.1f} ms, "
          f"p95 {p(first_lat, 95):.1f} ms")
    out(f"  second cycle, no change (query per person): {second_s:.1f} s, {second_rps:.0f} requests/s; "
          f"p50 {p(second_lat, 50):.1f} ms, p95 {p(second_lat, 95):.1f} ms")
    out(f"  extrapolated first cycle of 10,000 people: {ten_k_min:.1f} minutes (linear: every request is "
          "point reads and single-row writes, none scans)")
    out("Budgets:")
    for label, ok in ((f"first cycle >= {BUDGET_FIRST_RPS:.0f} requests/s", first_rps >= BUDGET_FIRST_RPS),
                      (f"second cycle >= {BUDGET_SECOND_RPS:.0f} requests/s", second_rps >= BUDGET_SECOND_RPS),
                      (f"10,000 people's first cycle <= {BUDGET_10K_MINUTES:.0f} minutes",
                       ten_k_min <= BUDGET_10K_MINUTES)):
        out(f"  {'PASS' if ok else 'FAIL'}  {label}")
    if args.markdown:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                                cwd=Path(__file__).resolve().parents[1]).stdout.strip()
        head = (f"\n## {args.label} ({commit}, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, "
                f"{platform.node()}, load {os.getloadavg()[0]:.2f})\n\n    ")
        with args.markdown.open("a", encoding="utf-8") as md:
            md.write(head + "\n    ".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
