"""`python -m tools.host` serves the real function_app.py as a newcomer runs it: its own process,
settings from local.settings.json with the process environment winning, HTTPS with the test CA."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import requests

from tools.stack import free_port

ROOT = Path(__file__).resolve().parents[2]


def test_the_host_command_serves_function_app_with_local_settings(app_env, test_ca, idp, tmp_path, demo_accounts):
    port = free_port()
    app_dir = tmp_path / "app"
    app_dir.mkdir()
    for name in ("function_app.py", "host.json", "functions", "shared"):
        (app_dir / name).symlink_to(ROOT / name)
    # local.settings.json names a wrong client id; the process environment's value must win.
    (app_dir / "local.settings.json").write_text(json.dumps({"IsEncrypted": False, "Values": {
        **app_env, "OIDC_CLIENT_ID": "from-local-settings", "PUBLIC_BASE_URL": f"https://127.0.0.1:{port}"}}))
    env = {**os.environ, "OIDC_CLIENT_ID": app_env["OIDC_CLIENT_ID"], "PYTHONPATH": str(ROOT)}
    process = subprocess.Popen([sys.executable, "-m", "tools.host", "--app-dir", str(app_dir), "--port", str(port),
                                "--cert", str(test_ca.server_cert), "--key", str(test_ca.server_key)],
                               cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    base = f"https://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                jwks = requests.get(f"{base}/api/sso/jwks.json", timeout=2)
                break
            except requests.ConnectionError:
                assert process.poll() is None and time.monotonic() < deadline, "tools.host did not come up"
                time.sleep(0.1)
        assert jwks.status_code == 200 and jwks.json()["keys"]
        login = requests.get(f"{base}/api/sso/user/login", allow_redirects=False, timeout=10)
        assert login.status_code == 302
        assert login.headers["Location"].startswith(idp.issuer)
        assert f"client_id={app_env['OIDC_CLIENT_ID']}" in login.headers["Location"], "the environment wins"
        assert f"redirect_uri=https%3A%2F%2F127.0.0.1%3A{port}%2Fapi%2Fsso%2Fuser%2Fcallback" in login.headers[
            "Location"], "local.settings.json values fill what the environment does not set"
    finally:
        # Ctrl-C in make run's terminal: the signal reaches the host from the terminal and again from
        # make run. The second, mid-shutdown, printed an "Exception ignored in threading" traceback.
        process.terminate()
        time.sleep(0.005)
        process.terminate()
        output = process.communicate(timeout=10)[0]
    assert "sso_login: [GET" in output or "sso_login" in output, output[-2000:]
    assert process.returncode == 0, output[-2000:]
    assert "Traceback" not in output and "Exception ignored" not in output, output[-2000:]
