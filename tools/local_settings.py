"""``local.settings.json`` read as Core Tools reads it: ``Values`` become environment variables where the
process environment has no value for them (unset or empty, as Core Tools' ``string.IsNullOrEmpty``),
``Host.LocalHttpPort`` is the default port, and ``//`` and ``/* */`` comments are allowed (Newtonsoft's
``JObject.Parse`` skips them), so a file that works with ``func start`` works here."""

from __future__ import annotations

import json
import logging
import os
import re
from collections.abc import MutableMapping
from pathlib import Path
from typing import Any

LOG = logging.getLogger("tools.local_settings")

# A JSON string (kept as it is), or a comment (blanked): one pass, so "//" inside a string is text.
_STRING_OR_COMMENT = re.compile(r'"(?:[^"\\]|\\.)*"|//[^\n]*|/\*.*?\*/', re.DOTALL)


def _without_comments(text: str) -> str:
    # A comment becomes spaces and its newlines, so json's error positions still point into the file;
    # an unclosed /* is left as it is, for json to report.
    return _STRING_OR_COMMENT.sub(
        lambda m: m[0] if m[0].startswith('"') else re.sub(r"[^\n]", " ", m[0]), text)


def _port(path: Path, value: Any) -> int | None:
    """Host.LocalHttpPort: a number or a string of digits (Newtonsoft reads "7071" into an int)."""
    if value is None:
        return None
    if isinstance(value, str) and value.isascii() and value.isdigit():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 65535:
        raise SystemExit(f"{path}: Host.LocalHttpPort must be a port number (0 to 65535), not {json.dumps(value)}")
    return value


def _json_type(value: Any) -> str:
    return {list: "an array", str: "a string", bool: "true or false", int: "a number", float: "a number"}.get(
        type(value), "null")


def settings_path(where: Path) -> Path:
    """The settings file: `where` itself when it names a .json file, else local.settings.json in it."""
    where = Path(where)
    return where if where.suffix == ".json" else where / "local.settings.json"


def _read(app_dir: Path) -> dict[str, Any]:
    path = settings_path(app_dir)
    if not path.is_file():
        return {}
    try:
        data = json.loads(_without_comments(path.read_text(encoding="utf-8-sig")))
    except UnicodeDecodeError as exc:
        raise SystemExit(f"{path}: not UTF-8 text (byte {exc.start}); save it as UTF-8") from exc
    except json.JSONDecodeError as exc:
        raise SystemExit(f"{path}: not valid JSON ({exc})") from exc
    if not isinstance(data, dict):
        raise SystemExit(f"{path}: expected an object with a Values object")
    for section in ("Values", "Host"):
        if data.get(section) is not None and not isinstance(data[section], dict):
            # Its type, not its value: Values holds connection strings with their keys.
            raise SystemExit(f"{path}: {section} must be an object, not {_json_type(data[section])}")
    if data.get("IsEncrypted"):
        raise SystemExit(f"{path}: IsEncrypted is true; run `func settings decrypt` or write plain values")
    if data.get("Host"):  # checked once, kept as the number
        data["Host"]["LocalHttpPort"] = _port(path, data["Host"].get("LocalHttpPort"))
    return data


def load_local_settings(app_dir: Path, environ: MutableMapping[str, str] = os.environ) -> dict[str, str]:
    """Applies ``Values`` to ``environ`` where it has no value (unset or empty); returns what was applied."""
    return apply_values(_read(app_dir).get("Values") or {}, environ)


def apply_values(values: dict[str, Any], environ: MutableMapping[str, str]) -> dict[str, str]:
    """Core Tools' rule: each value goes to ``environ`` where it has none (unset or empty); returns
    what was applied."""
    applied: dict[str, str] = {}
    for name, value in values.items():
        if not isinstance(value, str | int | float | bool):
            LOG.warning("local.settings.json: %s is not a string, number or boolean; ignored", name)
        elif not environ.get(name):
            environ[name] = applied[name] = value if isinstance(value, str) else json.dumps(value)
    return applied


def local_http_port(app_dir: Path) -> int | None:
    return (_read(app_dir).get("Host") or {}).get("LocalHttpPort")
