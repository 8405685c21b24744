"""The login benchmark (`make bench`): what a login costs, measured against the local stack (Azurite, the
dev IdP over HTTPS), on this machine. It prints, from one run:

- login start and callback p50/p95 through tools.host, one keep-alive client session per browser;
- per step, wall and CPU medians, in-process (each method of the login's collaborators timed);
- the dependency floor: the median time on the wire of each outbound call a callback makes (from the
  HTTP adapter all of them go through), summed, and the ratio callback p50 / floor;
- CPU ms per login (process CPU over login start and callback, in-process);
- callbacks/s of one worker at 1, 4 and 8 threads (codes prepared beforehand: the IdP's login page is
  not timed);
- outbound calls per warm login, by target;
- cold start: `import function_app` in a fresh interpreter (warm .pyc), the first login start and the
  first callback of a new runtime;
- RSS growth per 1,000 logins, and a separate tracemalloc pass (never while timing);
- `tools.accounts import` rows/s;
- the budgets, pass or fail. It never fails: it exits 0 whatever it measured.

    .venv/bin/python -m tools.bench_login [--logins 300] [--import-rows 10000] [--markdown BENCHMARKS.md --label L]

It measures whatever code is checked out, so the same script gives the "before" and "after" of a change.
"""

from __future__ import annotations

import argparse
import functools
import gc
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import tracemalloc
from collections import Counter, defaultdict
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urlencode, urlsplit

import requests
import requests.adapters
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from .stack import entra_person, free_port, idp_config, make_ca, start_azurite, start_idp, trust_env

try:
    from .idp_login import sign_in_at_idp
except ImportError:  # older checkouts kept it under tests/
    from tests.support.idp_login import sign_in_at_idp

ROOT = Path(__file__).resolve().parent.parent
TENANT = "11111111-2222-4333-8444-555555555555"
CLIENT_ID, SECRET = "bench-client", "bench-secret"
EMAIL, PASSWORD = "bench@contoso.test", "pw"
BUDGETS = {"warm login discovery/JWKS/Key Vault calls": ("==", 0), "callback table calls": ("<=", 4),
           "callback CPU ms (p50)": ("<=", 8.0), "callback p50 / dependency floor": ("<=", 1.3),
           "callbacks/s per worker (best of 1/4/8 threads)": (">=", 100), "import rows/s": (">=", 2500)}


# ---- outbound calls, counted and timed where every HTTP call of the app goes: requests' HTTPAdapter

class Wire:
    """Patches HTTPAdapter.send (MSAL's session and the Azure SDKs' transport both use it) to record
    each of the app's calls: its target and its time on the wire, under the current `phase`. The
    bench's own thread (the browsers) is marked as the client, and its calls are not the app's."""

    def __init__(self, ports: dict[int, str]):
        self.ports, self.local, self.calls = ports, threading.local(), []
        self.lock = threading.Lock()
        self.phase: str | None = None
        self.local.client = True
        real = requests.adapters.HTTPAdapter.send
        wire = self

        @functools.wraps(real)
        def send(adapter, request, *args, **kwargs):
            started = time.perf_counter()
            try:
                return real(adapter, request, *args, **kwargs)
            finally:
                wire.record(request, time.perf_counter() - started)

        requests.adapters.HTTPAdapter.send = send

    def target(self, request) -> str:
        url = urlsplit(request.url)
        service = self.ports.get(url.port or 443, "other")
        if service == "tables":
            name = url.path.split("/")[2].split("(")[0] if url.path.count("/") >= 2 else "?"
            return f"table {name} {request.method}"
        if service == "idp":
            path = url.path
            return "idp discovery" if "well-known" in path else "idp jwks" if "jwks" in path or "keys" in path \
                else "idp token" if path.endswith("/token") else f"idp {path.rsplit('/', 1)[-1]}"
        return service

    def record(self, request, seconds: float) -> None:
        if self.phase is None or getattr(self.local, "client", False):
            return
        with self.lock:
            self.calls.append((self.phase, self.target(request), seconds * 1000))


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


def rss_mb() -> float:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


# ---- the app, in-process, with each collaborator method timed

class Steps:
    """Wraps the public methods of the login's collaborators (flows, accounts, events, oidc, the signer,
    the ID-token check) with wall and thread-CPU timers."""

    def __init__(self):
        self.times: dict[str, list[tuple[float, float]]] = defaultdict(list)
        self.on = False

    def wrap(self, name: str, fn):
        steps = self

        @functools.wraps(fn)
        def timed(*args, **kwargs):
            if not steps.on:
                return fn(*args, **kwargs)
            wall, cpu = time.perf_counter(), time.thread_time()
            try:
                return fn(*args, **kwargs)
            finally:
                steps.times[name].append(((time.perf_counter() - wall) * 1000, (time.thread_time() - cpu) * 1000))

        return timed

    def instrument(self, runtime) -> None:
        import shared.login as login

        for attr in ("flows", "accounts", "events", "oidc"):
            collaborator = getattr(runtime, attr)
            for name in dir(collaborator):
                method = getattr(collaborator, name)
                if not name.startswith("_") and callable(method) and name not in ("ttl",):
                    setattr(collaborator, name, self.wrap(f"{attr}.{name}", method))
        signer = runtime.signer()
        signer.issue_session_token = self.wrap("signer.issue_session_token", signer.issue_session_token)
        login.verify_id_token = self.wrap("verify_id_token", login.verify_id_token)


class Browser:
    """One person's browser: a keep-alive session with the CA bundle loaded once (trust_env off)."""

    def __init__(self, bundle: str):
        self.session = requests.Session()
        self.session.verify, self.session.trust_env = bundle, False


def prepared_callback(service, browser: Browser, kind: str = "user", cpu: list | None = None):
    """Login start in-process and the IdP's login page: what the callback will carry. The login
    start's process CPU (ms) is appended to `cpu`."""
    before = time.process_time()
    start = service.start_login(kind, None, "bench-start")
    if cpu is not None:
        cpu.append((time.process_time() - before) * 1000)
    cookie = next(c for c in start.cookies if c.startswith("__Host-")).split(";")[0]
    _, fields = sign_in_at_idp(browser.session, start.headers["Location"], EMAIL, PASSWORD)
    body = urlencode(fields).encode()
    try:
        from shared.callback import CallbackRequest

        return CallbackRequest("POST", "application/x-www-form-urlencoded", body, {}, cookie)
    except ImportError:  # older checkouts parsed the callback in the HTTP glue
        from shared.login import Callback

        name, _, value = cookie.partition("=")
        return Callback(dict(fields), {name: value})


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--logins", type=int, default=300)
    parser.add_argument("--import-rows", type=int, default=10000)
    parser.add_argument("--markdown", type=Path, help="append the figures to this file (BENCHMARKS.md)")
    parser.add_argument("--label", default="", help="what this run measures, for the markdown section")
    args = parser.parse_args(argv)

    work = Path(tempfile.mkdtemp(prefix="bench-login-"))
    ca = make_ca(work / "ca")
    os.environ.update(trust_env(ca))
    os.environ.pop("CURL_CA_BUNDLE", None)
    app_port = free_port()
    base = f"https://127.0.0.1:{app_port}"
    person = entra_person(EMAIL, PASSWORD, name="Bench User", oid="0c1f6b0e-2b8e-4f5a-9d51-7a3e1f2c9b01",
                          tenant=TENANT)
    client = {"client_id": CLIENT_ID, "client_secret": SECRET, "token_endpoint_auth_method": "client_secret_post",
              "redirect_uris": [f"{base}/api/sso/user/callback"]}
    azurite = start_azurite(workdir=work)
    idp_port = free_port()
    idp = start_idp(idp_config(ca, port=idp_port, tenant=TENANT, clients=[client], people=[person]), workdir=work)
    key = ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()).decode()
    env = {"OIDC_ISSUER_URL": idp.url, "OIDC_CLIENT_ID": CLIENT_ID, "OIDC_CLIENT_SECRET": SECRET,
           "SESSION_SIGNING_KEY": key, "TABLES_CONNECTION_STRING": azurite.connection_string,
           "PORTAL_USER_URL": "https://127.0.0.1:9/user", "PORTAL_AGENT_URL": "https://127.0.0.1:9/agent",
           "PUBLIC_BASE_URL": base}
    wire = Wire({azurite.port: "tables", idp_port: "idp"})
    lines: list[str] = []
    results: dict[str, float] = {}

    def say(text: str = "") -> None:
        print(text, flush=True)
        lines.append(text)

    try:
        # Cold start: a fresh interpreter importing function_app (warm .pyc: the second of two runs).
        probe = "import time; t = time.perf_counter(); import function_app; print((time.perf_counter() - t) * 1000)"
        for _ in range(2):
            done = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True,
                                  env={**os.environ, "PYTHONDONTWRITEBYTECODE": ""})
        import_ms = float(done.stdout.strip().splitlines()[-1])

        import function_app
        from shared.login import SsoService
        from shared.runtime import Runtime, reset_runtime

        from .host import build_wsgi_app, serve_in_thread

        runtime = Runtime(env)
        reset_runtime(runtime)
        server = serve_in_thread(build_wsgi_app(function_app.app), port=app_port,
                                 ssl_context=(str(ca.server_cert), str(ca.server_key)))
        bundle = os.environ["REQUESTS_CA_BUNDLE"]
        runtime.accounts.add(EMAIL, "user", "U-1", "Bench User")

        def login_through_host(browser: Browser, record: bool = False) -> tuple[float, float, int]:
            wire.phase = "start" if record else None
            t0 = time.perf_counter()
            started = browser.session.get(f"{base}/api/sso/user/login", allow_redirects=False, timeout=30)
            t1 = time.perf_counter()
            wire.phase = None  # the IdP's login page, and whatever the app warms meanwhile, is no one's call
            action, fields = sign_in_at_idp(browser.session, started.headers["Location"], EMAIL, PASSWORD)
            wire.phase = "callback" if record else None
            t2 = time.perf_counter()
            done = browser.session.post(action, data=fields, allow_redirects=False, timeout=30)
            t3 = time.perf_counter()
            wire.phase = None
            return (t1 - t0) * 1000, (t3 - t2) * 1000, done.status_code

        # The first login of a new runtime (cold caches: discovery, MSAL, tables, keys).
        browser = Browser(bundle)
        first_start, first_callback, status = login_through_host(browser)
        assert status == 200, status

        # Through tools.host: warm-up, then timed.
        for _ in range(10):
            login_through_host(browser)
        wire.calls.clear()
        gc.collect()
        rss_before = rss_mb()
        starts, callbacks = [], []
        for _ in range(args.logins):
            s, c, status = login_through_host(browser, record=True)
            assert status == 200, status
            starts.append(s)
            callbacks.append(c)
        rss_growth = (rss_mb() - rss_before) * 1000 / args.logins
        calls = Counter((tag, target) for tag, target, _ in wire.calls)
        wire_ms = defaultdict(list)
        for tag, target, ms in wire.calls:
            if tag == "callback":
                wire_ms[target].append(ms)
        per_callback = {t: n / args.logins for (tag, t), n in calls.items() if tag == "callback"}
        per_start = {t: n / args.logins for (tag, t), n in calls.items() if tag == "start"}
        floor = sum(statistics.median(v) * per_callback[t] for t, v in wire_ms.items())
        cb50 = statistics.median(callbacks)

        say(f"machine: {platform.machine()}, {os.cpu_count()} cores, {cpu_model()}, "
            f"Python {platform.python_version()}, load average {os.getloadavg()[0]:.2f}; "
            "Azurite + dev IdP (HTTPS) on loopback")
        say(f"commit: {git_commit()}, {datetime.now(UTC):%Y-%m-%d %H:%M} UTC, {args.logins} logins after 10 warm-up")
        say()
        say("| through tools.host (keep-alive clients) | p50 ms | p95 ms |")
        say("| --- | ---: | ---: |")
        say(f"| login start (302 to the IdP) | {statistics.median(starts):.1f} | {percentile(starts, 95):.1f} |")
        say(f"| callback (redeem, validate, account, token, audit) | {cb50:.1f} | {percentile(callbacks, 95):.1f} |")
        say()
        say("| outbound calls per warm login | login start | callback | wire ms (p50) |")
        say("| --- | ---: | ---: | ---: |")
        for target in sorted(set(per_start) | set(per_callback)):
            ms = f"{statistics.median(wire_ms[target]):.2f}" if wire_ms.get(target) else ""
            say(f"| {target} | {per_start.get(target, 0):.2f} | {per_callback.get(target, 0):.2f} | {ms} |")
        table_calls = sum(n for t, n in per_callback.items() if t.startswith("table"))
        idle_calls = sum(n for t, n in {**per_start, **per_callback}.items()
                         if t in ("idp discovery", "idp jwks") or t.startswith("vault"))
        say()
        say(f"dependency floor of a callback (wire time of its calls): {floor:.1f} ms; "
            f"callback p50 / floor = {cb50 / floor:.2f}")

        # In-process: per-step medians and CPU per login.
        steps = Steps()
        steps.instrument(runtime)
        service = SsoService(runtime)
        cpu_start, cpu_callback, walls = [], [], []
        for _ in range(max(100, args.logins // 2)):
            prepared = prepared_callback(service, browser, cpu=cpu_start)
            steps.on = True
            w, c = time.perf_counter(), time.process_time()
            reply = service.complete_login("user", prepared, "bench-callback")
            cpu_callback.append((time.process_time() - c) * 1000)
            walls.append((time.perf_counter() - w) * 1000)
            steps.on = False
            assert reply.status == 200, reply.body[:300]
        say()
        say("| in-process step (callback) | calls | wall ms p50 | CPU ms p50 |")
        say("| --- | ---: | ---: | ---: |")
        for name, values in sorted(steps.times.items(), key=lambda kv: -statistics.median(v[0] for v in kv[1])):
            say(f"| {name} | {len(values) / len(walls):.1f} | {statistics.median(v[0] for v in values):.2f} | "
                f"{statistics.median(v[1] for v in values):.2f} |")
        say(f"| **callback, all of it** | 1 | {statistics.median(walls):.2f} | {statistics.median(cpu_callback):.2f} |")
        say()
        say(f"CPU per login (process CPU, in-process, p50): login start {statistics.median(cpu_start):.2f} ms + "
            f"callback {statistics.median(cpu_callback):.2f} ms = "
            f"{statistics.median(cpu_start) + statistics.median(cpu_callback):.2f} ms")

        # Throughput of one worker: callbacks/s with 1, 4, 8 threads, codes prepared first.
        rates = {}
        for threads in (1, 4, 8):
            prepared = [prepared_callback(service, browser) for _ in range(40 * threads if threads > 1 else 60)]
            t = time.perf_counter()
            with ThreadPoolExecutor(threads) as pool:
                replies = list(pool.map(lambda p: service.complete_login("user", p, "bench-rate"), prepared))
            rates[threads] = len(prepared) / (time.perf_counter() - t)
            assert all(r.status == 200 for r in replies), {r.status for r in replies}
        say("callbacks/s of one worker: " + ", ".join(f"{n} thread{'s' if n > 1 else ''} {r:.0f}/s"
                                                      for n, r in rates.items()))

        # A new runtime, in-process, for the cold path; then memory in a separate tracemalloc pass.
        say(f"cold start: import function_app {import_ms:.0f} ms (fresh interpreter, warm .pyc); "
            f"first login start {first_start:.0f} ms, first callback {first_callback:.0f} ms (through tools.host)")
        tracemalloc.start()
        snapshot = tracemalloc.take_snapshot()
        for _ in range(100):
            login_through_host(browser)
        gc.collect()
        heap = sum(s.size_diff for s in tracemalloc.take_snapshot().compare_to(snapshot, "filename"))
        tracemalloc.stop()
        say(f"memory: RSS growth {rss_growth:.2f} MB per 1,000 logins (timed pass); Python heap growth "
            f"{heap / 1024:.0f} KiB over 100 logins (tracemalloc pass, not timed)")
        server.stop()

        # Bulk import.
        rows_per_s = bench_import(azurite.connection_string, args.import_rows, work)
        say(f"tools.accounts import: {args.import_rows} rows at {rows_per_s:.0f} rows/s")

        results = {"warm login discovery/JWKS/Key Vault calls": idle_calls, "callback table calls": table_calls,
                   "callback CPU ms (p50)": statistics.median(cpu_callback),
                   "callback p50 / dependency floor": cb50 / floor,
                   "callbacks/s per worker (best of 1/4/8 threads)": max(rates.values()),
                   "import rows/s": rows_per_s}
        say()
        say("| budget | measured | target | |")
        say("| --- | ---: | ---: | --- |")
        for name, (op, target) in BUDGETS.items():
            value = results[name]
            ok = {"==": value == target, "<=": value <= target, ">=": value >= target}[op]
            say(f"| {name} | {value:.2f} | {op} {target} | {'pass' if ok else 'FAIL'} |")
    finally:
        idp.stop()
        azurite.stop()
    if args.markdown:
        with args.markdown.open("a") as out:
            out.write(f"\n## {args.label or git_commit()}\n\n" + "\n".join(lines) + "\n")
    return 0


def bench_import(connection_string: str, rows: int, work: Path) -> float:
    """rows/s of `tools.accounts import` (its checks, then its writes) of a fresh CSV (tools.bench_import's)."""
    from . import accounts
    from .bench_import import write_csv

    path = work / "import.csv"
    write_csv(path, rows)
    started = time.perf_counter()
    code = accounts.main(["--connection-string", connection_string, "import", str(path)])
    elapsed = time.perf_counter() - started
    assert code == 0, f"the import failed with exit code {code}"
    return rows / elapsed


def cpu_model() -> str:
    try:
        return next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor() or "unknown CPU"


def git_commit() -> str:
    done = subprocess.run(["git", "log", "-1", "--format=%h %s"], cwd=ROOT, capture_output=True, text=True)
    return done.stdout.strip()[:90] or "unknown commit"


if __name__ == "__main__":
    raise SystemExit(main())
