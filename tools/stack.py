"""Launchers for the local stand-ins: a test CA, Azurite (Table Storage) and the dev IdP (Entra-shaped).

Used by ``make run`` and by the pytest fixtures. Standard library plus ``trustme`` only.

Every service runs in its own process group (``start_new_session``) with its stdout/stderr going to
log files in the given work directory, so pipes never fill. ``Service.stop()`` ends the whole group
(SIGTERM, then SIGKILL after 5 s); ``stop_all()`` stops every service started, also at interpreter exit
as a backstop, so a crashed test run does not leave processes behind. A process is recorded as it is
started, with stop signals held back in between, so none can be started and go unrecorded.
"""

from __future__ import annotations

import atexit
import base64
import contextlib
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEVSTACK = ROOT / "devstack"
NODE_MODULES = DEVSTACK / "node_modules"
IDP_SCRIPT = DEVSTACK / "idp.mjs"

SYSTEM_CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")

# Azurite's account name. Its key is made at run time (AZURITE_ACCOUNTS), never kept in the repo; make run
# keeps its own in .devstack/ (git-ignored) with the data, so a restart opens the same tables.
AZURITE_ACCOUNT = "devstoreaccount1"

STOP_TIMEOUT = 5.0
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)  # Ctrl-C, `kill`, the terminal closing


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free right now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# --------------------------------------------------------------------------------------------- CA


@dataclass
class TestCA:
    """A local test CA and one server certificate for 127.0.0.1 and localhost, as PEM files."""

    __test__ = False  # not a pytest test class

    dir: Path
    ca_cert: Path
    server_cert: Path
    server_key: Path
    bundle: Path  # the system CA bundle followed by our CA: what REQUESTS_CA_BUNDLE points at


def _system_bundle() -> Path | None:
    if SYSTEM_CA_BUNDLE.is_file():
        return SYSTEM_CA_BUNDLE
    try:
        import certifi  # optional; requests depends on it
    except ImportError:
        return None
    return Path(certifi.where())


def write_private(path: Path, text: str) -> None:
    """Writes a file only its owner may read, from its first byte (not chmod after a write under the umask)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(fd, 0o600)  # O_CREAT's mode is not applied to a file that was already there
    with os.fdopen(fd, "w") as out:
        out.write(text)


def make_ca(directory: Path) -> TestCA:
    """Create (or reuse) a trustme CA and a server certificate for 127.0.0.1 and localhost.

    Idempotent: when the files already exist in ``directory`` they are reused, so the CA a
    developer once trusted stays the same across ``make run``s. The bundle is rewritten each time
    (system bundle + our CA).
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    ca = TestCA(
        dir=directory,
        ca_cert=directory / "ca.pem",
        server_cert=directory / "server.pem",
        server_key=directory / "server-key.pem",
        bundle=directory / "bundle.pem",
    )
    if not (ca.ca_cert.is_file() and ca.server_cert.is_file() and ca.server_key.is_file()):
        import trustme  # a dev dependency: imported only when a CA is made

        authority = trustme.CA(organization_name="Portal SSO local test CA")
        leaf = authority.issue_cert("127.0.0.1", "localhost")
        authority.cert_pem.write_to_path(str(ca.ca_cert))
        with ca.server_cert.open("wb") as out:
            for blob in leaf.cert_chain_pems:
                out.write(blob.bytes())
        write_private(ca.server_key, leaf.private_key_pem.bytes().decode("ascii"))
    system = _system_bundle()
    parts = []
    if system is not None:
        parts.append(system.read_bytes().rstrip(b"\n") + b"\n")
    parts.append(ca.ca_cert.read_bytes())
    ca.bundle.write_bytes(b"".join(parts))
    return ca


def trust_env(ca: TestCA) -> dict[str, str]:
    """Environment variables that make Python HTTP clients trust the test CA (and the system CAs).

    ``requests`` (hence MSAL, and the Azure SDKs' transport) reads ``REQUESTS_CA_BUNDLE``; the
    ``ssl`` module's default context reads ``SSL_CERT_FILE``. Callers must also remove
    ``CURL_CA_BUNDLE`` from the environment they apply this to (``os.environ.pop("CURL_CA_BUNDLE",
    None)`` or ``env.pop(...)`` for a child): it names the system bundle on this machine and some
    clients prefer it. Note that ``requests`` lets these variables win over ``Session.verify``.
    """
    bundle = str(ca.bundle)
    return {"REQUESTS_CA_BUNDLE": bundle, "SSL_CERT_FILE": bundle}


# --------------------------------------------------------------------------------------- services


@dataclass
class Service:
    """A started local service: its process (own process group), its URL and its log files."""

    name: str
    process: subprocess.Popen
    url: str
    port: int = 0
    logs: list[Path] = field(default_factory=list)
    connection_string: str = ""  # for a storage service: how clients reach it
    account_key: str = ""  # for a storage service: its key, to start it again as the same account
    stop_signal: int = signal.SIGTERM  # Azurite saves its data on SIGINT only (SIGTERM loses up to 5 s)

    def stop(self) -> None:
        """Ask the process group to stop; kill it if it has not exited after 5 s. Idempotent."""
        proc = self.process
        if proc.poll() is None:
            _signal_group(proc, self.stop_signal)
            try:
                proc.wait(timeout=STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                _signal_group(proc, signal.SIGKILL)
                proc.wait(timeout=STOP_TIMEOUT)
        # Children left in the group (a wrapper's node child, say) go too.
        _signal_group(proc, signal.SIGKILL)
        _running.discard(self)  # only now: a stop cut short is finished by stop_all

    def log_text(self, limit: int = 20000) -> str:
        """The tail of the service's logs, for error messages."""
        chunks = []
        for path in self.logs:
            with contextlib.suppress(OSError):
                text = path.read_text(errors="replace")
                chunks.append(f"--- {path.name} ---\n{text[-limit:]}")
        return "\n".join(chunks)

    def __hash__(self) -> int:
        return id(self)

    def __eq__(self, other: object) -> bool:
        return self is other


_running: set[Service] = set()


def _signal_group(proc: subprocess.Popen, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, sig)


@atexit.register
def stop_all() -> None:
    """Stops every service this process started and has not stopped, started or still starting."""
    for service in list(_running):
        with contextlib.suppress(Exception):
            service.stop()


@contextlib.contextmanager
def signals_deferred():
    """Holds SIGINT, SIGTERM and SIGHUP back until the block ends, then lets them act as usual: a stop
    that fell between starting a process and recording it would leave that process unknown, running."""
    if threading.current_thread() is not threading.main_thread():  # only it runs signal handlers
        yield
        return
    caught: list[int] = []
    held = {sig: signal.getsignal(sig) for sig in STOP_SIGNALS}
    held = {sig: handler for sig, handler in held.items() if handler not in (None, signal.SIG_IGN)}
    for sig in held:
        signal.signal(sig, lambda signum, _frame: caught.append(signum))
    try:
        yield
    finally:
        for sig, handler in held.items():
            signal.signal(sig, handler)
        for signum in dict.fromkeys(caught):
            signal.raise_signal(signum)


def _spawn(name: str, argv: list[str], workdir: Path, env: dict[str, str] | None = None) -> Service:
    workdir.mkdir(parents=True, exist_ok=True)
    out_path = workdir / f"{name}.out.log"
    err_path = workdir / f"{name}.err.log"
    with out_path.open("wb") as out, err_path.open("wb") as err, signals_deferred():
        proc = subprocess.Popen(
            argv,
            cwd=str(workdir),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=err,
            env=env,
            start_new_session=True,
        )
        service = Service(name=name, process=proc, url="", logs=[out_path, err_path])
        _running.add(service)
    return service


def _node() -> str:
    node = shutil.which("node")
    if not node:
        raise RuntimeError("node (Node.js 20) is not on PATH; the dev IdP and Azurite need it")
    return node


def ensure_npm_packages() -> None:
    """Install the dev stack's npm packages (``npm ci``, or ``npm install`` without a lock file)
    in ``devstack/`` when they are missing. Idempotent and quick when they are there."""
    wanted = [
        NODE_MODULES / "oidc-provider",
        NODE_MODULES / "azurite",
        NODE_MODULES / ".bin" / "azurite-table",
        NODE_MODULES / "axe-core" / "axe.min.js",  # the browser tests' accessibility audit
    ]
    if all(path.exists() for path in wanted):
        return
    npm = shutil.which("npm")
    if not npm:
        raise RuntimeError("npm is not on PATH; install Node.js 20 to run the dev stack")
    command = "ci" if (DEVSTACK / "package-lock.json").is_file() else "install"
    subprocess.run([npm, command, "--no-audit", "--no-fund"], cwd=str(DEVSTACK), check=True)


def _wait_for_port(service: Service, port: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if service.process.poll() is not None:
            break
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return
        time.sleep(0.1)
    code = service.process.poll()
    service.stop()
    state = f"exited with code {code}" if code is not None else f"not listening after {timeout:.0f} s"
    raise RuntimeError(f"{service.name} {state} (port {port}).\n{service.log_text()}")


def start_azurite(port: int | None = None, *, workdir: Path, key: str | None = None,
                  on_disk: bool = False) -> Service:
    """Start Azurite's Table service on 127.0.0.1 (no telemetry) and wait until it listens: in memory,
    or with `on_disk` in `workdir`, so that a restart with the same port and `key` finds the same
    tables (an outage, not a data loss).

    ``url`` is the table endpoint, ``http://127.0.0.1:PORT/devstoreaccount1``; see
    :func:`azurite_connection_string`.
    """
    ensure_npm_packages()
    port = port or free_port()
    workdir = Path(workdir)
    argv = [
        _node(),
        str(NODE_MODULES / "azurite" / "dist" / "src" / "table" / "main.js"),
        "--tableHost", "127.0.0.1",
        "--tablePort", str(port),
        "--disableTelemetry",
        *(["--location", str(workdir)] if on_disk else ["--inMemoryPersistence"]),
        "--skipApiVersionCheck",
        "--loose",
    ]  # fmt: skip
    if not Path(argv[1]).is_file():  # layout changed: fall back to the npm bin shim
        argv = [str(NODE_MODULES / ".bin" / "azurite-table"), *argv[2:]]
    # Azurite refuses --location together with --inMemoryPersistence; its cwd is workdir either way.
    # AZURITE_ACCOUNTS replaces the public well-known key with one made now, for this run only.
    key = key or new_account_key()
    env = {**os.environ, "AZURITE_ACCOUNTS": f"{AZURITE_ACCOUNT}:{key}"}
    service = _spawn(f"azurite-{port}", argv, workdir, env=env)
    service.stop_signal = signal.SIGINT
    service.url = f"http://127.0.0.1:{port}/{AZURITE_ACCOUNT}"
    service.port = port
    service.connection_string = azurite_connection_string(port, key)
    service.account_key = key
    _wait_for_port(service, port, timeout=30)
    return service


def new_account_key() -> str:
    """A storage account key (64 random bytes, base64), made at run time."""
    return base64.b64encode(secrets.token_bytes(64)).decode()


def azurite_connection_string(port: int, key: str) -> str:
    """A connection string for Azurite's account on this port, Table endpoint only (a started
    Azurite has its own in ``Service.connection_string``)."""
    return (
        "DefaultEndpointsProtocol=http;"
        f"AccountName={AZURITE_ACCOUNT};"
        f"AccountKey={key};"
        f"TableEndpoint=http://127.0.0.1:{port}/{AZURITE_ACCOUNT};"
    )


def start_idp(config: dict, *, workdir: Path) -> Service:
    """Start the dev IdP (``node devstack/idp.mjs``) with ``config`` and wait for its READY line.

    ``config`` is the JSON the IdP reads (host, port, tenant, certFile, keyFile, clients, people;
    see devstack/idp.mjs). It is written to ``workdir`` (mode 600). ``url`` is the issuer,
    ``https://HOST:PORT/{tenant}/v2.0``. Raises RuntimeError with the IdP's stderr when it does not
    become ready within 30 s.
    """
    ensure_npm_packages()
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    port = int(config["port"])
    config_path = workdir / f"idp-{port}.json"
    write_private(config_path, json.dumps(config, indent=2))  # it holds the clients' secrets
    service = _spawn(f"idp-{port}", [_node(), str(IDP_SCRIPT), str(config_path)], workdir)
    service.port = port
    out_log = service.logs[0]
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError, ValueError, KeyError):
            for line in out_log.read_text(errors="replace").splitlines(keepends=True):
                if line.startswith("READY ") and line.endswith("\n"):
                    service.url = json.loads(line[len("READY ") :])["issuer"]
                    return service
        if service.process.poll() is not None:
            break
        time.sleep(0.05)
    code = service.process.poll()
    service.stop()
    state = f"exited with code {code}" if code is not None else "did not print READY within 30 s"
    raise RuntimeError(f"the dev IdP {state}.\n{service.log_text()}")


# ------------------------------------------------------------------------------------ IdP config


def idp_config(
    ca: TestCA,
    *,
    port: int,
    tenant: str,
    clients: list[dict],
    people: list[dict],
    host: str = "127.0.0.1",
) -> dict:
    """The CONFIG dict that :func:`start_idp` hands to devstack/idp.mjs.

    ``clients``: oidc-provider client metadata (``client_id``, ``client_secret``, ``redirect_uris``,
    ``post_logout_redirect_uris``, ``token_endpoint_auth_method`` = ``client_secret_post`` or
    ``private_key_jwt`` with ``jwks``). ``people``: ``{"login", "password", "claims": {...}}``; the
    person's ``sub`` is ``claims["oid"]`` when given, else the login.
    """
    return {
        "host": host,
        "port": port,
        "tenant": tenant,
        "certFile": str(ca.server_cert),
        "keyFile": str(ca.server_key),
        "clients": clients,
        "people": people,
    }


def entra_person(
    login: str,
    password: str,
    *,
    name: str,
    oid: str,
    tenant: str,
    email: str | None = None,
    **extra: object,
) -> dict:
    """A person for the dev IdP with the claims Entra puts in an ID token (``extra`` adds more,
    e.g. ``xms_edov=False`` or ``email_verified=False``; ``xms_edov=None`` leaves it out)."""
    claims = {
        "email": email if email is not None else login,
        "name": name,
        "preferred_username": login,
        "oid": oid,
        "tid": tenant,
        "xms_edov": True,  # Entra's optional claim: the email's domain is verified
        **extra,
    }
    return {"login": login, "password": password, "claims": {k: v for k, v in claims.items() if v is not None}}


@dataclass
class RunningIdp:
    """A started dev IdP and the configuration it was started with."""

    service: Service
    config: dict

    @property
    def issuer(self) -> str:
        return self.service.url

    @property
    def tenant(self) -> str:
        return self.config["tenant"]

    def client(self, client_id: str | None = None) -> dict:
        """The client with that id (the first client when None)."""
        clients = self.config["clients"]
        if client_id is None:
            return clients[0]
        return next(c for c in clients if c["client_id"] == client_id)

    def person(self, login: str) -> dict:
        return next(p for p in self.config["people"] if p["login"] == login)

    def stop(self) -> None:
        self.service.stop()
