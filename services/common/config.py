"""Service configuration: one YAML file per service in nameko's own format.

Values may be written ``${ENV_VAR:default}``; nameko's YAML loader substitutes
the environment at load time, so ``nameko run --config`` and ``esign run``
read the same files the same way.

Secrets (the key-encryption keys, the session secret, S3 keys in production)
are never written in these files: the file names an environment variable and a
file path, and :func:`read_secret` takes the value from whichever is set.
"""
from __future__ import annotations

import base64
import os
import secrets as _secrets
from pathlib import Path
from typing import Any

import yaml

REPO_ROOT = Path(__file__).resolve().parents[2]
SERVICE_NAMES = ("identity", "documents", "signing", "notify", "gateway")

_loader: type | None = None


def _config_loader() -> type:
    """A SafeLoader subclass that understands ``${ENV:default}`` exactly as
    ``nameko run`` does, without changing PyYAML's global SafeLoader (which
    nameko's own ``setup_yaml_parser`` would do for every YAML file read)."""
    global _loader
    if _loader is None:
        from functools import partial

        # Imported lazily: nameko's CLI module imports pkg_resources, which is slow.
        from nameko.cli.main import IMPLICIT_ENV_VAR_MATCHER, env_var_constructor

        class ConfigLoader(yaml.SafeLoader):
            pass

        ConfigLoader.add_constructor("!env_var", env_var_constructor)
        ConfigLoader.add_constructor("!raw_env_var", partial(env_var_constructor, raw=True))
        ConfigLoader.add_implicit_resolver("!env_var", IMPLICIT_ENV_VAR_MATCHER, None)
        _loader = ConfigLoader
    return _loader


def setting_flag(section: Any, key: str, default: bool, name: str) -> bool:
    """A boolean setting as YAML or an environment variable gives it (true/false, yes/no, 1/0,
    on/off; empty: ``default``); anything else stops the service, naming the setting ``name``."""
    from services.common.errors import InvalidInput

    value = section.get(key, default)
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off", ""):
        return False if text else default
    raise InvalidInput(name, "boolean", "expected true or false")


def setting_number(section: Any, key: str, default: float, name: str) -> float:
    """A positive number setting (empty: ``default``); anything else stops the service, naming ``name``."""
    from services.common.errors import InvalidInput

    value = section.get(key, default)
    if value in (None, ""):
        return default
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise InvalidInput(name, "number", "expected a number") from None
    if number <= 0:
        raise InvalidInput(name, "positive", "expected a number above 0")
    return number


def config_path(service: str) -> Path:
    return REPO_ROOT / "services" / service / "config.yaml"


def load_config(service_or_path: str | Path) -> dict[str, Any]:
    """Load a service's YAML config with ``${ENV:default}`` substitution."""
    path = Path(service_or_path)
    if not path.suffix:
        path = config_path(str(service_or_path))
    with open(path, encoding="utf-8") as stream:
        config = yaml.load(stream, Loader=_config_loader()) or {}
    return config


def data_dir(config: dict[str, Any]) -> Path:
    """The directory for embedded-default state (SQLite files, outbox, secrets)."""
    path = Path(config.get("DATA_DIR") or os.environ.get("ESIGN_DATA_DIR") or REPO_ROOT / "var")
    if not path.is_absolute():
        path = REPO_ROOT / path
    path.mkdir(parents=True, exist_ok=True)
    return path


class SecretMissing(RuntimeError):
    """A secret is neither in its environment variable nor in its file."""


def secret_generation_dir(config: dict[str, Any]) -> Path | None:
    """Where missing secrets may be generated: DATA_DIR when
    ``SECRETS.GENERATE_MISSING`` is set (embedded defaults only), else nowhere."""
    return data_dir(config) if (config.get("SECRETS") or {}).get("GENERATE_MISSING") else None


def read_secret(spec: dict[str, Any] | None, name: str, *, generate_in: Path | None = None) -> bytes:
    """Read one secret as bytes.

    ``spec`` is the secret's config entry: ``{"env": "ESIGN_KEK", "file": "..."}``.
    The environment variable wins; otherwise the file is read. Values are
    ``base64:`` followed by base64, or else used as raw UTF-8 text. With ``generate_in`` set
    (embedded defaults only), a missing file is created there with 0600
    permissions and a fresh random 32-byte value, so a first ``esign up`` works
    without setup and nothing secret is ever committed.
    """
    spec = spec or {}
    env_name = spec.get("env")
    if env_name and os.environ.get(env_name):
        return _decode_secret(os.environ[env_name])
    file_name = spec.get("file")
    path = Path(file_name) if file_name else None
    if path is not None and not path.is_absolute():
        path = REPO_ROOT / path
    if path is not None and path.exists():
        return _decode_secret(path.read_text(encoding="utf-8").strip())
    if generate_in is not None:
        path = path or (generate_in / "secrets" / name)
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        value = "base64:" + base64.b64encode(_secrets.token_bytes(32)).decode()
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:  # another process made it first: use theirs
            return _decode_secret(path.read_text(encoding="utf-8").strip())
        with os.fdopen(fd, "w") as handle:
            handle.write(value + "\n")
        return _decode_secret(value)
    raise SecretMissing(
        f"secret {name!r} is not set: set environment variable {env_name or '(none configured)'}"
        f" or create file {file_name or '(none configured)'}"
    )


def _decode_secret(value: str) -> bytes:
    if value.startswith("base64:"):
        return base64.b64decode(value[len("base64:"):])
    return value.encode("utf-8")
