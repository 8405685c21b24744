"""Drives the app under azure-functions-runtime, the library the platform's Python 3.13 worker loads,
through the worker protocol's messages: WorkerInit (which indexes function_app.py), FunctionsMetadata,
FunctionLoad of every function, and an Invocation of each HTTP route and of the timer. Run by
tests/deploy/test_worker.py with the worker's own Python 3.13 venv (`make worker-venv`); prints one
JSON document of what came back.

The messages are the worker repository's protos as its release on PyPI ships them compiled
(azure-functions-runtime-v1 installs them as the top-level package `tests.protos`, which this
repository's own `tests` package would shadow, so they are loaded from the venv by path)."""

from __future__ import annotations

import asyncio
import importlib.util
import json
import sys
import sysconfig
import uuid
from pathlib import Path
from types import SimpleNamespace


def load_protos():
    package = Path(sysconfig.get_paths()["purelib"]) / "tests" / "protos"
    spec = importlib.util.spec_from_file_location("worker_protos", package / "__init__.py",
                                                  submodule_search_locations=[str(package)])
    module = importlib.util.module_from_spec(spec)
    sys.modules["worker_protos"] = module
    spec.loader.exec_module(module)
    return module


def message(protos, **request):
    return SimpleNamespace(request=protos.StreamingMessage(**request),
                           properties={"host": "127.0.0.1", "protos": protos})


def http_input(protos, method: str, url: str, params: dict[str, str]):
    http = protos.RpcHttp(method=method, url=url, headers={"host": "127.0.0.1:7071"}, params=params,
                          query={}, body=protos.TypedData(bytes=b""))
    return [protos.ParameterBinding(name="req", data=protos.TypedData(http=http))]


def record_client_request_ids() -> list[str]:
    """The x-ms-client-request-id of every Azure SDK request the app sends from now on, as it reaches
    urllib3's connection pool (where the app's table and vault calls end); IdP calls have none."""
    import urllib3.connectionpool

    sent: list[str] = []
    real = urllib3.connectionpool.HTTPConnectionPool.urlopen

    def urlopen(pool, method, url, *args, **kwargs):
        value = (kwargs.get("headers") or {}).get("x-ms-client-request-id")
        if value:
            sent.append(value)
        return real(pool, method, url, *args, **kwargs)

    urllib3.connectionpool.HTTPConnectionPool.urlopen = urlopen
    return sent


async def main(app_dir: str) -> dict:
    protos = load_protos()
    from azure_functions_runtime import handle_event

    out: dict = {"python": sys.version.split()[0]}
    init = await handle_event.worker_init_request(message(
        protos, worker_init_request=protos.WorkerInitRequest(host_version="4.1040", function_app_directory=app_dir)))
    out["init"] = {"status": protos.StatusResult.Status.Name(init.result.status),
                   "error": init.result.exception.message}
    metadata = await handle_event.functions_metadata_request(message(
        protos, functions_metadata_request=protos.FunctionsMetadataRequest(function_app_directory=app_dir)))
    functions = {}
    for meta in metadata.function_metadata_results:
        bindings = [json.loads(raw) for raw in meta.raw_bindings]
        trigger = next(b for b in bindings if b["type"].endswith("Trigger"))
        functions[meta.name] = {"id": meta.function_id, "trigger": trigger["type"], "route": trigger.get("route"),
                                "methods": trigger.get("methods"), "authLevel": trigger.get("authLevel"),
                                "schedule": trigger.get("schedule")}
        loaded = await handle_event.function_load_request(message(
            protos, function_load_request=protos.FunctionLoadRequest(function_id=meta.function_id, metadata=meta)))
        functions[meta.name]["loaded"] = protos.StatusResult.Status.Name(loaded.result.status)
    out["functions"] = functions
    if set(functions) != {"sso_login", "sso_callback", "sso_logout", "sso_signed_out", "sso_jwks", "sso_setup",
                          "health", "purge_expired_rows", "scim_root", "scim"}:
        return out  # the test says what is missing

    calls = {"sso_login": ("GET", "sso/user/login", {"kind": "user"}),
             "sso_callback": ("POST", "sso/user/callback", {"kind": "user"}),
             "sso_logout": ("GET", "sso/user/logout", {"kind": "user"}),
             "sso_signed_out": ("GET", "sso/user/signed-out", {"kind": "user"}),
             "sso_jwks": ("GET", "sso/jwks.json", {}),
             "sso_setup": ("GET", "sso/setup", {}),
             "health": ("GET", "health", {}),
             # Directory sync off (no SCIM_TOKEN): a SCIM 404, answered without the SCIM libraries.
             "scim": ("GET", "scim/v2/ServiceProviderConfig", {"path": "ServiceProviderConfig"})}
    out["invocations"] = {}
    sent = record_client_request_ids()
    for name, (method, route, params) in calls.items():
        invocation_id = str(uuid.uuid4())
        sent.clear()
        response = await handle_event.invocation_request(message(protos, invocation_request=protos.InvocationRequest(
            invocation_id=invocation_id, function_id=functions[name]["id"],
            input_data=http_input(protos, method, f"http://127.0.0.1:7071/api/{route}", params))))
        http = response.return_value.http
        body = http.body.bytes or http.body.string.encode()
        out["invocations"][name] = {"status": protos.StatusResult.Status.Name(response.result.status),
                                    "error": response.result.exception.message, "http_status": http.status_code,
                                    "headers": dict(http.headers),
                                    "cookies": [{"name": c.name, "path": c.path.value, "secure": c.secure.value,
                                                 "http_only": c.http_only.value,
                                                 "same_site": protos.RpcHttpCookie.SameSite.Name(c.same_site)}
                                                for c in http.cookies],
                                    "body": body.decode(errors="replace")[:20000],
                                    "invocation_id": invocation_id, "client_request_ids": sorted(set(sent))}
    timer = await handle_event.invocation_request(message(protos, invocation_request=protos.InvocationRequest(
        invocation_id=str(uuid.uuid4()), function_id=functions["purge_expired_rows"]["id"],
        input_data=[protos.ParameterBinding(name="timer", data=protos.TypedData(
            json=json.dumps({"Schedule": {"AdjustForDST": True}, "IsPastDue": False})))])))
    out["invocations"]["purge_expired_rows"] = {"status": protos.StatusResult.Status.Name(timer.result.status),
                                                "error": timer.result.exception.message}
    return out


if __name__ == "__main__":
    # The platform starts the worker in the app's directory, which is where imports resolve from (not
    # this script's folder).
    sys.path[0] = sys.argv[1]
    print(json.dumps(asyncio.run(main(sys.argv[1]))))
