"""Logout and the signed-out page (shared/login.py): the IdP is asked to return to our signed-out
page, a registered redirect URI, never to the portal's landing URL (which takes POSTs only); an IdP
without an end_session_endpoint sends the browser straight there; the page links to the portal home."""

from __future__ import annotations

import logging
from dataclasses import replace
from urllib.parse import parse_qs, urlsplit

import pytest

from shared.config import load_settings
from shared.errors import DependencyUnavailable
from shared.login import SsoService
from shared.provider import ProviderMetadata

ENV = {"OIDC_ISSUER_URL": "https://idp.test/realm", "OIDC_CLIENT_ID": "portal-sso", "OIDC_CLIENT_SECRET": "s",
       "SESSION_SIGNING_KEY": "unused here", "TABLES_CONNECTION_STRING": "UseDevelopmentStorage=true",
       "PORTAL_USER_URL": "https://portal.test/sso/user", "PORTAL_AGENT_URL": "https://portal.test/sso/agent",
       "PORTAL_AGENT_HOME_URL": "https://portal.test/agents", "PUBLIC_BASE_URL": "https://sso.test"}
METADATA = ProviderMetadata(issuer="https://idp.test/realm", authorization_endpoint="https://idp.test/a",
                            token_endpoint="https://idp.test/t", jwks_uri="https://idp.test/k",
                            end_session_endpoint="https://idp.test/logout?x=1", id_token_algs=frozenset({"RS256"}),
                            iss_parameter_supported=False, discovered_from="https://idp.test/m")


class Deps:
    def __init__(self, env=ENV, metadata=METADATA):
        from shared.oidc_client import OidcClient

        self.env, self._metadata = env, metadata
        self.settings = load_settings(env)
        self.oidc = OidcClient.__new__(OidcClient)  # logout_url needs only the client id
        self.oidc.client_id = self.settings.client_id

    def metadata(self):
        return self._metadata

    def metadata_held(self):
        return self.metadata()


@pytest.mark.parametrize("kind", ["user", "agent"])
def test_logout_asks_the_idp_to_return_to_the_signed_out_page(kind):
    reply = SsoService(Deps()).logout(kind, "cid")
    location = urlsplit(reply.headers["Location"])
    assert reply.status == 302 and f"{location.scheme}://{location.netloc}{location.path}" == "https://idp.test/logout"
    query = parse_qs(location.query)
    assert query["post_logout_redirect_uri"] == [f"https://sso.test/api/sso/{kind}/signed-out"]
    assert query["x"] == ["1"] and query["client_id"] == ["portal-sso"]


def test_without_an_end_session_endpoint_logout_goes_straight_to_the_signed_out_page():
    reply = SsoService(Deps(metadata=replace(METADATA, end_session_endpoint=None))).logout("agent", "cid")
    assert (reply.status, reply.headers["Location"]) == (302, "https://sso.test/api/sso/agent/signed-out")


@pytest.mark.parametrize(("kind", "home"), [("user", "https://portal.test/"), ("agent", "https://portal.test/agents")])
def test_the_signed_out_page_links_to_the_kinds_home_never_its_landing_url(kind, home):
    reply = SsoService(Deps()).signed_out(kind, "cid")
    assert reply.status == 200 and "You are signed out" in reply.body
    assert f'href="{home}"' in reply.body and "/sso/" not in reply.body


def test_an_unknown_kind_is_404_with_the_way_back():
    reply = SsoService(Deps()).signed_out("admin", "cid")
    assert reply.status == 404
    assert "Back to the user portal" in reply.body and "Back to the agent portal" in reply.body


class BrokenSettings:
    """Settings that do not load (no client id), as the runtime raises them on every use."""

    env = {**ENV, "OIDC_CLIENT_ID": ""}

    @property
    def settings(self):
        return load_settings(self.env)

    def metadata(self):  # the runtime loads the settings first
        return self.settings

    metadata_held = metadata


def test_the_way_back_survives_bad_settings_elsewhere():
    reply = SsoService(BrokenSettings()).signed_out("user", "cid")
    assert reply.status == 200 and 'href="https://portal.test/"' in reply.body, "the portal's own settings are fine"
    assert "still active" in reply.body, "whether the IdP's sign-in ended is not known: the page says the safe thing"


def failure_lines(caplog, stage: str) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.getMessage().startswith(f"sso.{stage} ")]


def test_a_logout_failing_on_the_idp_is_a_503_whose_correlation_id_a_log_line_holds(caplog):
    class Unreachable(Deps):
        def metadata(self):
            raise DependencyUnavailable("idp", "GET https://idp.test/m: ConnectionError")

    with caplog.at_level(logging.INFO, logger="portal_sso"):
        reply = SsoService(Unreachable()).logout("user", "cid-logout-1")
    assert reply.status == 503 and reply.headers["Retry-After"] and "cid-logout-1" in reply.body
    (line,) = failure_lines(caplog, "logout")
    assert line.startswith("sso.logout kind=user outcome=failure reason=idp_unavailable status=503 "), line
    assert "correlation_id=cid-logout-1 " in line and "ConnectionError" in line


def test_a_logout_of_an_unknown_kind_is_logged_with_the_kind_quoted_last(caplog):
    with caplog.at_level(logging.INFO, logger="portal_sso"):
        reply = SsoService(Deps()).logout("adm\nin", "cid-logout-2")
    assert reply.status == 404
    (line,) = failure_lines(caplog, "logout")
    assert "correlation_id=cid-logout-2" in line and 'raw_kind="adm\\nin"' in line and "\n" not in line


class IdpDown(Deps):
    def metadata(self):
        raise DependencyUnavailable("idp", "GET https://idp.test/m: ConnectionError")


@pytest.mark.parametrize(("deps", "claim"), [
    (IdpDown(), False),  # not known: Entra's own logout may well have sent the person here
    (Deps(metadata=replace(METADATA, end_session_endpoint=None)), True),
])
def test_the_signed_out_page_says_the_idp_offers_no_sign_out_only_when_it_is_known(deps, claim):
    reply = SsoService(deps).signed_out("user", "cid")
    assert reply.status == 200 and "You are signed out" in reply.body
    assert ("offers no sign-out" in reply.body) is claim
    assert "Close the browser if it is a shared computer" in reply.body


def test_the_signed_out_page_never_waits_on_a_discovery():
    """A cold worker (nothing held) while the IdP does not answer: the page waited for the IdP's whole
    timeout, on every request, to choose a sentence."""
    from shared.runtime import Runtime

    runtime = Runtime(ENV)
    runtime._discover = lambda: pytest.fail("the signed-out page started a discovery")
    reply = SsoService(runtime).signed_out("user", "cid")
    assert reply.status == 200 and "offers no sign-out" not in reply.body
    assert "If you also chose to sign out at your organization's sign-in" in reply.body
