"""``local.settings.json`` read as Core Tools reads it: ``Values`` become environment variables unless the
process environment already has them (even empty), and ``Host.LocalHttpPort`` is the default port."""

from __future__ import annotations

import json
import logging
import os
from collections.abc import MutableMapping
from pathlib import Path
from typing import Any

LOG = logging.getLogger("tools.local_settings")


def _read(app_dir: Path) -> dict[str, Any]:
    path = Path(app_dir) / "local.settings.json"
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8-sig"))
    except json.JSONDecodeError as exc:
        raise SystemExit(f"{path}: not valid JSON ({exc})") from exc
    if not isinstance(data, dict) or not isinstance(data.get("Values") or {}, dict):
        raise SystemExit(f"{path}: expected an object with a Values object")
    if data.get("IsEncrypted"):
        raise SystemExit(f"{path}: IsEncrypted is true; run `func settings decrypt` or write plain values")
    return data


def load_local_settings(app_dir: Path, environ: MutableMapping[str, str] = os.environ) -> dict[str, str]:
    """Applies ``Values`` to ``environ`` where it has no such name; returns what was applied."""
    applied: dict[str, str] = {}
    for name, value in (_read(app_dir).get("Values") or {}).items():
        if not isinstance(value, str | int | float | bool):
            LOG.warning("local.settings.json: %s is not a string, number or boolean; ignored", name)
        elif name not in environ:
            environ[name] = applied[name] = value if isinstance(value, str) else json.dumps(value)
    return applied


def local_http_port(app_dir: Path) -> int | None:
    port = (_read(app_dir).get("Host") or {}).get("LocalHttpPort")
    return int(port) if port is not None else None
