"""`cas login` / `cas logout`: write and remove credentials where docker keeps them. No HTTP.

The same file and the same rules as ``docker login``, so docker, podman and cas share one
login: a registry named in ``credHelpers`` (or, failing that, the ``credsStore``) is stored
with ``docker-credential-<name> store`` and gets an empty ``auths`` entry as a marker;
otherwise ``auths[host] = {"auth": base64("user:password")}``, the file kept mode 0600.
Docker Hub is stored under docker's own key, ``https://index.docker.io/v1/``.
"""

from __future__ import annotations

import base64
import json
import os
import tempfile

from cas.errors import CredentialError
from cas.registry.credentials import (
    HELPER_TIMEOUT,
    Credentials,
    _helper_key,
    _helper_name,
    _section,
    config_path,
    cred_helper,
    normalize_registry,
    read_config,
)


def store_credentials(registry: str, credentials: Credentials) -> str:
    """Save a login for ``registry``; returns where it went (the file, or the helper's name)."""
    path, config, host = read_config(registry)
    config = config or {}
    key = _helper_key(host)
    auths = _other_auths(config, host, path)
    helper = _helper_for(config, host, path)
    if helper is not None:
        secret = {"ServerURL": key, "Username": credentials.username, "Secret": credentials.password}
        _run_helper(helper, "store", json.dumps(secret))
        auths[key] = {}
        where = f"docker-credential-{helper}"
    else:
        pair = f"{credentials.username}:{credentials.password}".encode()
        auths[key] = {"auth": base64.b64encode(pair).decode("ascii")}
        where = str(path)
    config["auths"] = auths
    _write_config(path, config)
    return where


def erase_credentials(registry: str) -> bool:
    """Forget the login for ``registry``; False when there was none."""
    path, config, host = read_config(registry)
    if config is None:
        return False
    kept = _other_auths(config, host, path)
    found = len(kept) != len(_section(config, "auths", path))
    helper = _helper_for(config, host, path)
    if helper is not None:
        found = _run_helper(helper, "erase", _helper_key(host)) or found
    if found:
        config["auths"] = kept
        _write_config(path, config)
    return found


def _other_auths(config: dict, host: str, path) -> dict:
    """The ``auths`` entries of every registry but ``host``."""
    return {k: v for k, v in _section(config, "auths", path).items() if normalize_registry(k) != host}


def _helper_for(config: dict, host: str, path) -> str | None:
    """Where docker would store ``host``'s secret: its credHelpers entry, else the credsStore."""
    helper = cred_helper(config, host, path)
    if helper is not None:
        return helper
    store = config.get("credsStore")
    return _helper_name(store, "credsStore", path) if store else None


def _run_helper(name: str, action: str, stdin: str) -> bool:
    """``docker-credential-<name> store|erase``; False when erase found nothing to erase."""
    import subprocess

    program = f"docker-credential-{name}"
    try:
        proc = subprocess.run(
            [program, action], input=stdin.encode(), capture_output=True, timeout=HELPER_TIMEOUT, check=False
        )
    except FileNotFoundError as exc:
        raise CredentialError(
            f"credential helper {program} is not installed (named in {config_path()})",
            hint=f"install {program}, or remove it from the docker config",
        ) from exc
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise CredentialError(f"cannot run credential helper {program} {action}: {exc}") from exc
    if proc.returncode != 0:
        detail = (proc.stdout or proc.stderr).decode("utf-8", "replace").strip()
        if action == "erase" and "not found" in detail.lower():
            return False
        raise CredentialError(
            f"credential helper {program} {action} failed (exit {proc.returncode}): {detail[:200]}",
            hint=f"try `{program} {action}` by hand",
        )
    return True


def _write_config(path, config: dict) -> None:
    """Atomically, mode 0600 (it holds secrets), keeping every key cas does not know."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".config.json.", suffix=".tmp")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                json.dump(config, f, indent="\t")
                f.write("\n")
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            os.unlink(tmp)
            raise
    except OSError as exc:
        raise CredentialError(f"cannot write docker config {path}: {exc.strerror or exc}") from exc
