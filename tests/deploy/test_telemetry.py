"""Application Insights through OpenTelemetry: the Python worker forwards only a log record's text, so
each login attempt's fields go as flat `extra` keys, which OpenTelemetry's logging handler carries as
attributes (what Application Insights shows as custom dimensions). Checked here with the OpenTelemetry
SDK's in-memory exporter; nothing is sent anywhere."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import requests
from opentelemetry.sdk._logs import LoggerProvider, LoggingHandler
from opentelemetry.sdk._logs.export import InMemoryLogRecordExporter, SimpleLogRecordProcessor

from tests.conftest import APP_BASE, DEMO_AGENT
from tests.support.portal import sign_in

ROOT = Path(__file__).resolve().parents[2]
FIELDS = {"kind", "outcome", "reason", "status", "elapsed_ms", "correlation_id"}


def test_each_login_attempt_reaches_opentelemetry_with_its_fields_as_attributes(app_server, demo_accounts):
    exporter = InMemoryLogRecordExporter()
    provider = LoggerProvider()
    provider.add_log_record_processor(SimpleLogRecordProcessor(exporter))
    handler = LoggingHandler(level=logging.INFO, logger_provider=provider)
    logger = logging.getLogger("portal_sso")
    logger.addHandler(handler)
    previous = logger.level
    logger.setLevel(logging.INFO)
    try:
        response = sign_in(requests.Session(), APP_BASE, "agent", DEMO_AGENT)
        assert response.status_code == 200
    finally:
        logger.removeHandler(handler)
        logger.setLevel(previous)
    records = [r.log_record for r in exporter.get_finished_logs()]
    attempts = {str(r.body).split()[0]: dict(r.attributes) for r in records if str(r.body).startswith("sso.")}
    assert {"sso.login", "sso.callback"} <= set(attempts), f"both attempts were exported: {list(attempts)}"
    callback = attempts["sso.callback"]
    assert FIELDS <= set(callback), f"the fields arrive as attributes: {sorted(callback)}"
    assert (callback["kind"], callback["outcome"], callback["status"]) == ("agent", "success", 200)
    assert isinstance(callback["elapsed_ms"], int) and callback["correlation_id"]


def test_host_json_selects_opentelemetry_and_the_app_requires_its_distro():
    assert json.loads((ROOT / "host.json").read_text())["telemetryMode"] == "OpenTelemetry"
    assert "azure-monitor-opentelemetry==" in (ROOT / "requirements.txt").read_text(), \
        "the worker configures the Azure Monitor distro when PYTHON_APPLICATIONINSIGHTS_ENABLE_TELEMETRY is true"


def test_the_setting_deploy_makes_has_the_exporter_sign_in_with_the_managed_identity(tmp_path, monkeypatch):
    """Application Insights takes Entra-authenticated telemetry only (deploy sets DisableLocalAuth): the
    Azure Monitor exporter that the worker configures must then authenticate with the app's identity,
    which the APPLICATIONINSIGHTS_AUTHENTICATION_STRING that deploy sets makes it do. Nothing is sent."""
    from azure.identity import ManagedIdentityCredential
    from azure.monitor.opentelemetry.exporter import AzureMonitorLogExporter

    from tests.deploy.fake_azure import DEPLOY_ARGS, FakeAzure

    azure = FakeAzure(tmp_path)
    assert azure.run("deploy", *DEPLOY_ARGS).code == 0
    settings = azure.state["sites"]["contoso-sso"]["settings"]
    connection = "InstrumentationKey=00000000-0000-0000-0000-000000000000;IngestionEndpoint=https://127.0.0.1:9/"
    monkeypatch.delenv("APPLICATIONINSIGHTS_AUTHENTICATION_STRING", raising=False)
    assert AzureMonitorLogExporter(connection_string=connection)._credential is None, "without it: key-based"
    name = "APPLICATIONINSIGHTS_AUTHENTICATION_STRING"
    monkeypatch.setenv(name, settings[name])
    assert isinstance(AzureMonitorLogExporter(connection_string=connection)._credential, ManagedIdentityCredential)
