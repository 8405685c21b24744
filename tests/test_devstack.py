"""The local stand-ins themselves: the dev IdP (a real OpenID Provider shaped like Entra ID) and Azurite."""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path
from urllib.parse import parse_qs, urlencode, urljoin, urlsplit

import jwt
import msal
import pytest
import requests
from azure.data.tables import TableServiceClient

from tests.support.portal import sign_in
from tools.idp_login import login_form, parse_forms, sign_in_at_idp
from tools.stack import RunningIdp, Service, free_port

TIMEOUT = 15


def _metadata(idp: RunningIdp) -> dict:
    response = requests.get(f"{idp.issuer}/.well-known/openid-configuration", timeout=TIMEOUT)
    assert response.status_code == 200, response.text
    return response.json()


def _verified_claims(idp: RunningIdp, id_token: str, client_id: str) -> dict:
    jwks = requests.get(_metadata(idp)["jwks_uri"], timeout=TIMEOUT).json()
    kid = jwt.get_unverified_header(id_token)["kid"]
    key = jwt.PyJWKSet.from_dict(jwks)[kid]
    return jwt.decode(
        id_token,
        key=key,
        algorithms=["RS256"],
        audience=client_id,
        issuer=idp.issuer,
        options={"require": ["exp", "iat", "sub", "nonce"]},
    )


def _code_flow(
    idp: RunningIdp,
    app: msal.ConfidentialClientApplication,
    person: dict,
    redirect_uri: str,
    browser: requests.Session | None = None,
):
    flow = app.initiate_auth_code_flow(["email"], redirect_uri=redirect_uri, response_mode="form_post")
    with requests.Session() as fresh:
        browser = browser or fresh
        action, fields = sign_in_at_idp(browser, flow["auth_uri"], person["login"], person["password"])
    assert action == redirect_uri
    assert fields["state"] == flow["state"]
    assert fields["iss"] == idp.issuer  # RFC 9207
    result = app.acquire_token_by_auth_code_flow(flow, fields)
    assert "error" not in result, result
    return flow, result


def test_discovery_is_entra_shaped(idp: RunningIdp) -> None:
    assert idp.issuer == f"https://127.0.0.1:{idp.config['port']}/{idp.tenant}/v2.0"
    meta = _metadata(idp)
    assert meta["issuer"] == idp.issuer
    for endpoint in ("authorization_endpoint", "token_endpoint", "jwks_uri", "end_session_endpoint"):
        assert meta[endpoint].startswith(f"{idp.issuer}/"), endpoint
    assert meta["authorization_response_iss_parameter_supported"] is True
    assert "RS256" in meta["id_token_signing_alg_values_supported"]
    assert "form_post" in meta["response_modes_supported"]
    assert {"S256"} <= set(meta["code_challenge_methods_supported"])
    assert {"email", "name", "preferred_username", "oid", "tid"} <= set(meta["claims_supported"])
    assert {"client_secret_post", "private_key_jwt"} <= set(meta["token_endpoint_auth_methods_supported"])
    keys = requests.get(meta["jwks_uri"], timeout=TIMEOUT).json()["keys"]
    assert [(k["kty"], k["alg"]) for k in keys] == [("RSA", "RS256")]
    assert all("d" not in k for k in keys)  # public members only


def test_outside_the_tenant_prefix_is_404(idp: RunningIdp) -> None:
    origin = idp.issuer.rsplit("/", 2)[0]
    assert requests.get(f"{origin}/.well-known/openid-configuration", timeout=TIMEOUT).status_code == 404
    other = f"{origin}/{uuid.uuid4()}/v2.0/.well-known/openid-configuration"
    assert requests.get(other, timeout=TIMEOUT).status_code == 404


def test_msal_code_flow_with_client_secret(idp: RunningIdp) -> None:
    client = idp.client()
    person = idp.person("user@contoso.test")
    app = msal.ConfidentialClientApplication(
        client["client_id"], client_credential=client["client_secret"], oidc_authority=idp.issuer
    )
    flow, result = _code_flow(idp, app, person, client["redirect_uris"][0])

    claims = _verified_claims(idp, result["id_token"], client["client_id"])
    expected = person["claims"]
    for name in ("email", "name", "preferred_username", "oid", "tid"):
        assert claims[name] == expected[name], name
    assert claims["sub"] == expected["oid"]
    assert claims["tid"] == idp.tenant
    # Entra's with the auth_time optional claim: the sign-in's time, in every ID token (prompt=login's check).
    assert isinstance(claims["auth_time"], int) and abs(claims["auth_time"] - time.time()) < 120
    # MSAL sends sha256-hex of its own nonce and checks the echo; so does this test.
    assert claims["nonce"] == hashlib.sha256(flow["nonce"].encode()).hexdigest()
    assert result["id_token_claims"]["email"] == expected["email"]


def test_extra_claims_are_emitted(idp: RunningIdp) -> None:
    client = idp.client()
    app = msal.ConfidentialClientApplication(
        client["client_id"], client_credential=client["client_secret"], oidc_authority=idp.issuer
    )
    _flow, result = _code_flow(idp, app, idp.person("unverified@contoso.test"), client["redirect_uris"][0])
    claims = _verified_claims(idp, result["id_token"], client["client_id"])
    assert claims["xms_edov"] is False
    assert claims["email_verified"] is False
    assert claims["email"] == "unverified@contoso.test"


def test_msal_code_flow_with_private_key_jwt(idp: RunningIdp, client_certificate) -> None:
    client = next(c for c in idp.config["clients"] if c["token_endpoint_auth_method"] == "private_key_jwt")
    person = idp.person("agent@contoso.test")
    app = msal.ConfidentialClientApplication(
        client["client_id"],
        client_credential={
            "private_key": client_certificate.private_key_pem,
            "thumbprint": client_certificate.sha1_thumbprint,
        },
        oidc_authority=idp.issuer,
    )
    _flow, result = _code_flow(idp, app, person, client["redirect_uris"][1])
    claims = _verified_claims(idp, result["id_token"], client["client_id"])
    assert claims["email"] == "agent@contoso.test"

    # MSAL's other certificate form: PS256 with x5t#S256 and x5c headers.
    app = msal.ConfidentialClientApplication(
        client["client_id"],
        client_credential={
            "private_key": client_certificate.private_key_pem,
            "public_certificate": client_certificate.certificate_pem,
        },
        oidc_authority=idp.issuer,
    )
    _flow, result = _code_flow(idp, app, person, client["redirect_uris"][1])
    assert result["id_token_claims"]["oid"] == person["claims"]["oid"]


def test_wrong_password_stays_on_login_page(idp: RunningIdp) -> None:
    client = idp.client()
    app = msal.ConfidentialClientApplication(
        client["client_id"], client_credential=client["client_secret"], oidc_authority=idp.issuer
    )
    flow = app.initiate_auth_code_flow(
        ["email"], redirect_uri=client["redirect_uris"][0], response_mode="form_post"
    )
    with requests.Session() as browser:
        with pytest.raises(AssertionError, match=r"refused the login .*HTTP 200.*incorrect"):
            sign_in_at_idp(browser, flow["auth_uri"], "user@contoso.test", "not-the-password")
        # Unknown people are refused the same way, and the form is still there to try again.
        login_page = browser.get(flow["auth_uri"], timeout=TIMEOUT)
        form = login_form(parse_forms(login_page.text))
        assert form is not None
        action = urljoin(login_page.url, form.attrs["action"])
        answer = browser.post(action, data={"login": "nobody@contoso.test", "password": "x"}, timeout=TIMEOUT)
        assert answer.status_code == 200
        assert login_form(parse_forms(answer.text)) is not None
        # ... and the right password then works in the same interaction.
        answer = browser.post(
            action, data={"login": "user@contoso.test", "password": "user-password"}, timeout=TIMEOUT
        )
        assert 'name="code"' in answer.text
        assert f'action="{client["redirect_uris"][0]}"' in answer.text


def _confirm_logout(browser: requests.Session, url: str) -> requests.Response:
    """Open the end-session URL and confirm the sign-out with one click (the IdP's confirm form, or
    its auto-submitted form when there is no session); return the IdP's answer, not followed."""
    page = browser.get(url, timeout=TIMEOUT)
    assert page.status_code == 200, page.text
    form = next(
        f for f in parse_forms(page.text).forms if f.attrs.get("action", "").endswith("/session/end/confirm")
    )
    action = urljoin(page.url, form.attrs["action"])
    return browser.post(
        action, data={**form.fields(), "logout": "yes"}, allow_redirects=False, timeout=TIMEOUT
    )


def test_rp_initiated_logout(idp: RunningIdp) -> None:
    client = idp.client()
    person = idp.person("user@contoso.test")
    app = msal.ConfidentialClientApplication(
        client["client_id"], client_credential=client["client_secret"], oidc_authority=idp.issuer
    )
    portal = client["post_logout_redirect_uris"][0]
    end_session = _metadata(idp)["end_session_endpoint"]
    with requests.Session() as browser:
        _flow, result = _code_flow(idp, app, person, client["redirect_uris"][0], browser)
        query = urlencode(
            {"id_token_hint": result["id_token"], "post_logout_redirect_uri": portal, "state": "bye"}
        )
        page = browser.get(f"{end_session}?{query}", timeout=TIMEOUT)
        assert 'id="op.logoutForm"' in page.text and "Yes, sign me out" in page.text
        done = _confirm_logout(browser, f"{end_session}?{query}")
        assert done.status_code in (302, 303), done.text
        location = urlsplit(done.headers["Location"])
        assert f"{location.scheme}://{location.netloc}{location.path}" == portal
        assert parse_qs(location.query)["state"] == ["bye"]
        # Signed out at the IdP: the next authorization request shows the login page again.
        flow = app.initiate_auth_code_flow(
            ["email"], redirect_uri=client["redirect_uris"][0], response_mode="form_post"
        )
        again = browser.get(flow["auth_uri"], timeout=TIMEOUT)
        assert login_form(parse_forms(again.text)) is not None

    # A post_logout_redirect_uri that is not registered is refused.
    query = urlencode({"client_id": client["client_id"], "post_logout_redirect_uri": "https://evil.test/"})
    refused = requests.get(f"{end_session}?{query}", timeout=TIMEOUT)
    assert refused.status_code == 400
    assert "post_logout_redirect_uri not registered" in refused.text


def test_second_login_uses_the_idp_session(idp: RunningIdp) -> None:
    client = idp.client()
    person = idp.person("agent@contoso.test")
    app = msal.ConfidentialClientApplication(
        client["client_id"], client_credential=client["client_secret"], oidc_authority=idp.issuer
    )
    with requests.Session() as browser:
        _code_flow(idp, app, person, client["redirect_uris"][1], browser)
        # Signed in already: no login page, straight to the form_post page (wrong password unused).
        _flow, result = _code_flow(
            idp, app, {**person, "password": "unused"}, client["redirect_uris"][1], browser
        )
    assert result["id_token_claims"]["email"] == "agent@contoso.test"


def test_prompt_select_account_shows_the_login_page_despite_a_session(idp: RunningIdp) -> None:
    """Entra's prompt=select_account lets a person choose another account: the dev IdP asks again."""
    client = idp.client()
    app = msal.ConfidentialClientApplication(
        client["client_id"], client_credential=client["client_secret"], oidc_authority=idp.issuer
    )
    with requests.Session() as browser:
        _code_flow(idp, app, idp.person("user@contoso.test"), client["redirect_uris"][1], browser)
        flow = app.initiate_auth_code_flow(
            ["email"], redirect_uri=client["redirect_uris"][1], response_mode="form_post", prompt="select_account"
        )
        page = browser.get(flow["auth_uri"], timeout=TIMEOUT)
        assert login_form(parse_forms(page.text)) is not None, "signed in already, yet asked which account"
        other = idp.person("agent@contoso.test")
        form = login_form(parse_forms(page.text))
        answer = browser.post(urljoin(page.url, form.attrs["action"]),
                              data={"login": other["login"], "password": other["password"]}, timeout=TIMEOUT)
        # oidc-provider ends the other person's session first, with a form a browser submits by script.
        ending = parse_forms(answer.text).forms[0]
        assert ending.attrs["action"].endswith("/session/end/confirm"), answer.text[:500]
        answer = browser.post(ending.attrs["action"], data=ending.fields(), timeout=TIMEOUT)
        callback = parse_forms(answer.text).forms[0]
        assert callback.attrs["action"] == client["redirect_uris"][1], answer.text[:500]
        result = app.acquire_token_by_auth_code_flow(flow, callback.fields())
    assert result["id_token_claims"]["email"] == "agent@contoso.test", "the account chosen, not the session's"


def test_azurite_tables(azurite: Service) -> None:
    service = TableServiceClient.from_connection_string(azurite.connection_string)
    table = service.create_table_if_not_exists("DevstackCheck")
    entity = {"PartitionKey": "user@contoso.test", "RowKey": "user", "AccountId": "u-1", "Enabled": True}
    table.upsert_entity(entity)
    got = table.get_entity("user@contoso.test", "user")
    assert got["AccountId"] == "u-1"
    assert got["Enabled"] is True
    assert azurite.url == f"http://127.0.0.1:{azurite.port}/devstoreaccount1"


# ---- make run itself (tools/dev.py): settings for the CLI, storage that survives, scenarios -------------

ROOT = Path(__file__).resolve().parents[1]


def _stop_signals_as_in_a_terminal() -> None:
    for stop in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(stop, signal.SIG_DFL)


class MakeRun:
    """`python -m tools.dev` (what `make run` runs) on free ports, its state and settings file under a
    temporary directory; entered once its output shows `until` (by default: the stack is up); stopped
    with Ctrl-C (SIGINT) unless it has stopped already."""

    def __init__(self, home: Path, until: str = "Press Ctrl-C to stop.", **env: str) -> None:
        self.until = until
        self.home, self.state, self.settings_file = home, home / "state", home / "local.settings.json"
        self.ports = {name: free_port() for name in ("APP", "IDP", "PORTAL", "TABLES")}
        self.env = {**os.environ, "PYTHONUNBUFFERED": "1", "DEV_STATE_DIR": str(self.state),
                    "DEV_SETTINGS_FILE": str(self.settings_file),
                    **{f"DEV_{name}_PORT": str(port) for name, port in self.ports.items()}, **env}
        self.base = f"https://127.0.0.1:{self.ports['APP']}"

    def __enter__(self) -> MakeRun:
        self.out = self.home / f"make-run-{time.monotonic_ns()}.log"
        with self.out.open("wb") as sink:
            # A session of its own: if it does not stop, its services (Azurite, the IdP, the host, the
            # portal) are killed with it instead of outliving the test. Its stop signals as a terminal
            # starts it with: a test run under nohup (or in the background) would pass on ignored ones.
            self.process = subprocess.Popen([sys.executable, "-m", "tools.dev"], cwd=ROOT, env=self.env,
                                            stdout=sink, stderr=subprocess.STDOUT, start_new_session=True,
                                            preexec_fn=_stop_signals_as_in_a_terminal)
        deadline = time.monotonic() + 120
        while self.until not in self.text:
            assert self.process.poll() is None and time.monotonic() < deadline, f"make run did not start:\n{self.text}"
            time.sleep(0.2)
        return self

    @property
    def text(self) -> str:
        return self.out.read_text(errors="replace")

    def __exit__(self, *exc) -> None:
        if self.process.poll() is None:
            self.stop(signal.SIGINT)

    def stop(self, sig: int) -> int:
        """Sends `sig` to make run's own process (as `kill` or a closing terminal does) and waits for it."""
        self.process.send_signal(sig)
        try:
            return self.process.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.kill_left_running()  # Azurite and the IdP run in sessions of their own
            raise

    def kill_left_running(self) -> None:
        for line in self.left_running():
            with contextlib.suppress(OSError):
                os.kill(int(line.split(" ", 1)[0]), signal.SIGKILL)

    def left_running(self) -> list[str]:
        """The processes still alive that this run started: every one of them (Azurite, the IdP, the host,
        the portal) names a file under the run's own directory on its command line."""
        left = []
        for proc in Path("/proc").iterdir():
            with contextlib.suppress(OSError):
                args = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
                if proc.name.isdigit() and int(proc.name) != os.getpid() and str(self.home) in args:
                    left.append(f"{proc.name} {args}")
        return left

    def browser(self) -> requests.Session:
        session = requests.Session()
        session.trust_env = False  # the dev stack's own CA, not the one the test session trusts
        session.verify = str(self.state / "ca" / "ca.pem")
        return session

    def accounts_cli(self, *args: str) -> tuple[int, str, str]:
        """The accounts CLI as an operator runs it, with no storage setting in the environment: it finds
        make run's local.settings.json where it looks (the project root; here the test's directory)."""
        from tools import accounts

        out, err = io.StringIO(), io.StringIO()
        environ = {k: v for k, v in os.environ.items() if not k.startswith("TABLES_")}
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = accounts.main(list(args), environ=environ, app_dir=self.home)
        return code, out.getvalue(), err.getvalue()


DEV_USER = {"login": "user@contoso.test", "password": "user"}


@pytest.mark.timeout(600)
def test_make_run_leaves_settings_for_the_cli_keeps_its_data_and_lets_the_environment_win(tmp_path):
    with MakeRun(tmp_path) as run:
        assert oct(run.settings_file.stat().st_mode & 0o777) == "0o600", "it holds the storage key"
        values = json.loads(run.settings_file.read_text())["Values"]
        assert "AccountKey=" in values["TABLES_CONNECTION_STRING"], "the CLI gets Azurite's key"
        assert '"seeded": ["user@contoso.test (user U-1001)", "agent@contoso.test (agent A-2001)"]' in run.text
        code, out, err = run.accounts_cli("list")
        assert code == 0 and "user@contoso.test" in out, err
        code, _, err = run.accounts_cli("add", "kept@contoso.test", "--kind", "user", "--account-id", "U-7")
        assert code == 0, err
        with run.browser() as browser:
            assert sign_in(browser, run.base, "user", DEV_USER).status_code == 200, "the stack signs in"
    assert (tmp_path / "state" / "azurite").is_dir(), "Azurite's data is kept in the state directory"

    # Started again, with a wrong secret in the environment: the data is still there, and the app
    # runs with the environment's value (as Core Tools does), so the sign-in fails as it would in Azure.
    with MakeRun(tmp_path, OIDC_CLIENT_SECRET="wrong") as run:
        assert '"seeded": []' in run.text, "the demo accounts were kept, not written again"
        assert "From your environment (it wins over local.settings.json): OIDC_CLIENT_SECRET" in run.text
        assert "kept@contoso.test" in run.accounts_cli("list")[1], "accounts survive a restart"
        with run.browser() as browser:
            assert sign_in(browser, run.base, "user", DEV_USER).status_code == 401


@pytest.mark.timeout(600)
def test_a_scenario_sets_up_the_mistake_an_admin_then_sees(tmp_path):
    with MakeRun(tmp_path, SCENARIO="no-email-claim") as run:
        assert "SCENARIO no-email-claim:" in run.text
        with run.browser() as browser:
            refused = sign_in(browser, run.base, "user", DEV_USER)
            assert refused.status_code == 403 and "no_email_claim" in refused.text
            setup = browser.get(f"{run.base}/api/sso/setup", timeout=TIMEOUT).text
        assert "email claim in the token: no" in setup and 'class="st fail"' in setup


@pytest.mark.timeout(300)
@pytest.mark.parametrize(("until", "sig"), [
    ("starting the dev IdP", signal.SIGTERM),  # `kill` while Azurite is up and the IdP is starting
    ("Press Ctrl-C to stop.", signal.SIGHUP),  # the terminal closed once the stack is up
], ids=["sigterm-during-start-up", "sighup-after-the-banner"])
def test_a_stop_signal_at_any_time_leaves_nothing_of_the_stack_running(tmp_path, until, sig):
    """Azurite and the IdP run in sessions of their own, so only make run itself can stop them: a stop
    it misses leaves them holding their ports, and the next make run refuses to start."""
    run = MakeRun(tmp_path, until=until)
    with run:
        code = run.stop(sig)
    left, deadline = run.left_running(), time.monotonic() + 10
    while left and time.monotonic() < deadline:  # what was stopped may take a moment to go
        time.sleep(0.2)
        left = run.left_running()
    run.kill_left_running()  # never outlive the test, even when it fails
    assert left == [], f"still running after make run stopped:\n{run.text}"
    assert code == 0 and "stopping ..." in run.text, run.text


def test_each_scenario_changes_the_idp_or_the_app_as_it_says():
    from tools.dev import OTHER_TENANT, SCENARIOS, demo_people

    assert set(SCENARIOS) == {"wrong-secret", "no-email-claim", "wrong-tenant", "no-role"}
    normal = {p["login"]: p["claims"] for p in demo_people(None)}
    assert normal["user@contoso.test"]["roles"] == ["Portal.User"]
    assert normal["agent@contoso.test"]["roles"] == ["Portal.Agent"]
    assert all("email" not in p["claims"] for p in demo_people(SCENARIOS["no-email-claim"]))
    assert {p["claims"]["tid"] for p in demo_people(SCENARIOS["wrong-tenant"])} == {OTHER_TENANT}
    assert all("roles" not in p["claims"] for p in demo_people(SCENARIOS["no-role"]))
    assert SCENARIOS["no-role"].app == {"APP_ROLES_REQUIRED": "true"}
    assert SCENARIOS["wrong-secret"].app["OIDC_CLIENT_SECRET"]


def test_a_mistyped_scenario_is_named_with_the_known_ones_not_a_traceback(monkeypatch, capsys):
    from tools.dev import main

    monkeypatch.setenv("SCENARIO", "wrong_secret")
    with pytest.raises(SystemExit) as stopped:
        main([])
    err = capsys.readouterr().err
    assert stopped.value.code == 2 and "Traceback" not in err
    assert "'wrong_secret' is not one of: no-email-claim, no-role, wrong-secret, wrong-tenant" in err


def test_make_runs_own_settings_file_stays_its_own_after_devstack_is_deleted_and_yours_is_left_alone(
        tmp_path, monkeypatch):
    """README: "Delete .devstack/ to start afresh". The copy there was how make run knew the root file
    for its own; without it, the stale file (the old Azurite key) was "yours" and left alone for good."""
    from tools import dev

    root, state = tmp_path / "local.settings.json", tmp_path / ".devstack"
    state.mkdir()
    monkeypatch.setattr(dev, "LOCAL_SETTINGS", root)
    monkeypatch.setattr(dev, "WRITTEN_SETTINGS", state / "local.settings.json")
    dev.write_local_settings({"TABLES_CONNECTION_STRING": "old"})
    (state / "local.settings.json").unlink()  # rm -rf .devstack
    said = dev.write_local_settings({"TABLES_CONNECTION_STRING": "new"})
    assert json.loads(root.read_text())["Values"]["TABLES_CONNECTION_STRING"] == "new", said
    yours = '{"IsEncrypted": false, "Values": {"KEY_VAULT_URL": "https://mine.vault.azure.net"}}'
    root.write_text(yours)
    assert "left alone" in dev.write_local_settings({"TABLES_CONNECTION_STRING": "newer"})
    assert root.read_text() == yours


@pytest.fixture
def no_app_settings(monkeypatch):
    """An environment holding none of the app's settings (the shell running the tests may export some)."""
    from shared.config import SETTINGS_TABLE

    for info in SETTINGS_TABLE:
        monkeypatch.delenv(info.name, raising=False)


@pytest.mark.usefixtures("no_app_settings")
def test_an_empty_variable_is_not_reported_as_winning_over_the_settings(monkeypatch):
    """Core Tools fills an empty variable from local.settings.json, and so does tools.host: make run's
    note must not name it as the environment's."""
    from tools.dev import from_environment

    monkeypatch.setenv("OIDC_CLIENT_SECRET", "wrong")
    monkeypatch.setenv("OIDC_CLIENT_ID", "")
    monkeypatch.setenv("PUBLIC_BASE_URL", "https://127.0.0.1:7071")
    values = {"OIDC_CLIENT_SECRET": "s", "OIDC_CLIENT_ID": "c", "PUBLIC_BASE_URL": "https://127.0.0.1:7071"}
    assert from_environment(values) == ["OIDC_CLIENT_SECRET"]


@pytest.mark.usefixtures("no_app_settings")
def test_every_app_setting_set_in_the_environment_is_named_not_only_those_make_run_writes(monkeypatch):
    """An app setting make run does not write (APP_ROLES_REQUIRED, KEY_VAULT_URL...) exported in the
    shell still reaches the app: the note names it too, by name only, never its value."""
    from tools.dev import from_environment

    monkeypatch.setenv("APP_ROLES_REQUIRED", "true")
    monkeypatch.setenv("KEY_VAULT_URL", "https://mine.vault.azure.net")
    monkeypatch.setenv("SESSION_TOKEN_TTL_SECONDS", "")  # empty: the app's default, nothing overridden
    monkeypatch.setenv("NOT_AN_APP_SETTING", "x")
    values = {"OIDC_CLIENT_ID": "c"}
    assert from_environment(values) == ["APP_ROLES_REQUIRED", "KEY_VAULT_URL"]


def test_files_holding_secrets_are_private_even_when_they_were_there_before(tmp_path):
    """`cp local.settings.example.json local.settings.json` leaves a 0644 file: O_CREAT's 0600 does not
    apply to it, so make run wrote the storage key into a file every local user could read."""
    from tools.stack import write_private

    existing = tmp_path / "local.settings.json"
    existing.write_text("{}")
    existing.chmod(0o644)
    write_private(existing, '{"AccountKey": "k"}')
    fresh = tmp_path / "new"
    old = os.umask(0)
    try:
        write_private(fresh, "secret")
    finally:
        os.umask(old)
    assert (existing.stat().st_mode & 0o777, fresh.stat().st_mode & 0o777) == (0o600, 0o600)
    assert existing.read_text() == '{"AccountKey": "k"}'


def test_the_dev_servers_private_key_is_private_from_its_first_byte(tmp_path, monkeypatch):
    """make_ca wrote .devstack/ca/server-key.pem under the umask (0644) and chmodded it after: between
    the two (or for good, if the chmod never ran) every local user could read the key."""
    from tools.stack import make_ca

    monkeypatch.setattr(Path, "chmod", lambda *args, **kwargs: None)  # privacy may not rest on a later chmod
    old = os.umask(0o022)
    try:
        ca = make_ca(tmp_path / "ca")
    finally:
        os.umask(old)
    assert ca.server_key.stat().st_mode & 0o777 == 0o600
    assert b"PRIVATE KEY" in ca.server_key.read_bytes()


@pytest.mark.parametrize("value", ["abc", "99999"])
def test_a_port_variable_that_is_no_port_is_named_not_a_traceback(tmp_path, value):
    """`DEV_APP_PORT=abc make run` was a ValueError traceback, and 99999 an OverflowError (each before
    anything started, so this runs make run itself)."""
    env = {**os.environ, "DEV_APP_PORT": value, "DEV_STATE_DIR": str(tmp_path / "state"),
           "DEV_SETTINGS_FILE": str(tmp_path / "local.settings.json")}
    done = subprocess.run([sys.executable, "-m", "tools.dev"], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr
    assert f"DEV_APP_PORT={value!r} is not a port (1 to 65535)" in done.stderr, done.stderr
    assert not (tmp_path / "state").exists(), "nothing started"


def test_every_port_variable_is_checked_and_an_empty_one_is_the_default():
    from tools.dev import read_ports

    ports, problems = read_ports({"DEV_TABLES_PORT": "0", "DEV_IDP_PORT": " 8443 ", "DEV_PORTAL_PORT": ""})
    assert problems == ["DEV_TABLES_PORT='0' is not a port (1 to 65535)"]
    assert (ports["idp"], ports["portal"], ports["app"]) == (8443, 7080, 7071)
