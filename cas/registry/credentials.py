"""Registry credentials from the docker CLI's config, its credential helpers, and the login files
of podman, buildah and skopeo. No HTTP.

Lookup order for a registry host, first the file ``docker login`` (and ``cas login``) writes:

1. ``credHelpers[host]``: run ``docker-credential-<name> get``;
2. ``auths[host]`` when the entry holds credentials (``auth``, ``username``/``password``
   or ``identitytoken``);
3. ``credsStore``: run ``docker-credential-<name> get``;
4. the containers auth files (containers-auth.json(5)), each's ``credHelpers[host]`` then
   ``auths[host]``: ``$REGISTRY_AUTH_FILE`` alone when it is set, else
   ``$XDG_RUNTIME_DIR/containers/auth.json`` (``/run/containers/UID/auth.json`` without it),
   then ``${XDG_CONFIG_HOME:-~/.config}/containers/auth.json``. Keys naming a namespace
   (``quay.io/org``) are not read: credentials here belong to a host;
5. nothing: anonymous.

Keys are compared after ``normalize_registry``: a scheme and path are dropped
(``https://host:5000/v2/`` is ``host:5000``), and every spelling of Docker Hub
(``https://index.docker.io/v1/``, ``index.docker.io``, ``registry-1.docker.io``)
is ``docker.io``. A malformed config or a failing helper is a CredentialError
that names the file or the helper.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from cas.errors import CredentialError
from cas.reference import DOCKER_HUB, DOCKER_HUB_ALIASES

# The key docker login uses for Docker Hub, and what helpers are asked for.
DOCKER_HUB_KEY = "https://index.docker.io/v1/"
HELPER_TIMEOUT = 30.0

log = logging.getLogger("cas.registry.credentials")


@dataclass(frozen=True)
class Credentials:
    """A username and password, or an identity (refresh) token. Secrets stay out of repr."""

    username: str | None = None
    password: str | None = field(default=None, repr=False)
    identity_token: str | None = field(default=None, repr=False)

    @property
    def has_basic(self) -> bool:
        return bool(self.username) and self.password is not None


def normalize_registry(key: str) -> str:
    """``https://Host:5000/v2/`` -> ``host:5000``; every Docker Hub spelling -> ``docker.io``."""
    host = key.strip()
    if "://" in host:
        host = host.split("://", 1)[1]
    host = host.split("/", 1)[0].lower()
    return DOCKER_HUB if host in DOCKER_HUB_ALIASES else host


def config_path() -> Path:
    """``$DOCKER_CONFIG/config.json``, else ``~/.docker/config.json``."""
    directory = os.environ.get("DOCKER_CONFIG")
    base = Path(directory) if directory else Path.home() / ".docker"
    return base / "config.json"


def read_config(registry: str) -> tuple[Path, dict | None, str]:
    """The docker config's path, its contents (None when absent or empty), and ``registry`` normalized."""
    path = config_path()
    return path, _load_config(path), normalize_registry(registry)


def cred_helper(config: dict, host: str, path: Path) -> str | None:
    """The ``credHelpers`` entry for ``host``, validated; None when there is none."""
    for key, name in _section(config, "credHelpers", path).items():
        if normalize_registry(key) == host:
            return _helper_name(name, f"credHelpers[{key!r}]", path)
    return None


def lookup_credentials(registry: str) -> Credentials | None:
    """Credentials for ``registry`` (a host[:port]), or None to go anonymous. ``-v`` says where they came from."""
    path, config, host = read_config(registry)
    if config is not None:
        found = _from_file(config, host, path, docker=True)
        if found is not None:
            return found
        store = config.get("credsStore")
        if store:
            helper = _helper_name(store, "credsStore", path)
            log.debug("credentials for %s: asking docker-credential-%s (credsStore in %s)", host, helper, path)
            return run_helper(helper, _helper_key(host))
    auth_files = containers_auth_files()
    for auth_file in auth_files:
        config = _load_config(auth_file)
        found = None if config is None else _from_file(config, host, auth_file, docker=False)
        if found is not None:
            return found
    log.debug("no credentials for %s in %s: anonymous", host, ", ".join(map(str, [path, *auth_files])))
    return None


def containers_auth_files(env: Mapping[str, str] | None = None) -> list[Path]:
    """Where podman, buildah and skopeo keep logins, in the order they read them."""
    env = os.environ if env is None else env
    if env.get("REGISTRY_AUTH_FILE"):
        return [Path(env["REGISTRY_AUTH_FILE"])]
    runtime = env.get("XDG_RUNTIME_DIR")
    primary = Path(runtime, "containers") if runtime else Path("/run/containers", str(os.getuid()))
    config_home = Path(env["XDG_CONFIG_HOME"]) if env.get("XDG_CONFIG_HOME") else Path.home() / ".config"
    return [primary / "auth.json", config_home / "containers" / "auth.json"]


def _from_file(config: dict, host: str, path: Path, *, docker: bool) -> Credentials | None:
    """A file's ``credHelpers[host]``, else its ``auths[host]`` holding credentials. In a containers
    auth file a key with a path and no scheme names a namespace, not the host (docker drops the path)."""
    helper = cred_helper(config, host, path)
    if helper is not None:
        log.debug("credentials for %s: asking docker-credential-%s (credHelpers in %s)", host, helper, path)
        return run_helper(helper, _helper_key(host))
    for key, entry in _section(config, "auths", path).items():
        namespace = not docker and "://" not in key and "/" in key.rstrip("/")
        if normalize_registry(key) == host and not namespace:
            creds = parse_auth_entry(entry, f"{_label(path)}: auths[{key!r}]")
            if creds is not None:
                log.debug("credentials for %s: auths[%r] in %s", host, key, path)
                return creds
    return None


def parse_auth_entry(entry: object, where: str) -> Credentials | None:
    """One ``auths`` entry; None when it holds no credentials (``{}`` is a helper's marker)."""
    if not isinstance(entry, dict):
        raise CredentialError(f"malformed {where}: expected an object")
    token = entry.get("identitytoken") or None
    username, password = entry.get("username") or None, entry.get("password")
    encoded = entry.get("auth")
    if encoded:
        if not isinstance(encoded, str):
            raise CredentialError(f"malformed {where}: 'auth' is not a string")
        try:
            decoded = base64.b64decode(encoded, validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError) as exc:
            raise CredentialError(
                f"malformed {where}: 'auth' is not base64 of USER:PASSWORD",
                hint="run `docker login` again to rewrite it",
            ) from exc
        username, sep, password = decoded.partition(":")
        if not sep or not username:
            raise CredentialError(
                f"malformed {where}: 'auth' is not base64 of USER:PASSWORD",
                hint="run `docker login` again to rewrite it",
            )
    if not (username or token):
        return None
    for name, value in (("username", username), ("password", password), ("identitytoken", token)):
        if value is not None and not isinstance(value, str):
            raise CredentialError(f"malformed {where}: {name!r} is not a string")
    return Credentials(username, password, token)


def run_helper(name: str, server: str) -> Credentials | None:
    """``docker-credential-<name> get`` with the server on stdin; None when it has nothing."""
    import subprocess  # only when a helper is configured: keeps it off the anonymous pull's start-up

    program = f"docker-credential-{name}"
    try:
        proc = subprocess.run(
            [program, "get"], input=server.encode(), capture_output=True, timeout=HELPER_TIMEOUT, check=False
        )
    except FileNotFoundError as exc:
        raise CredentialError(
            f"credential helper {program} is not installed (named in {config_path()})",
            hint=f"install {program}, or remove it from the docker config",
        ) from exc
    except subprocess.TimeoutExpired as exc:
        raise CredentialError(f"credential helper {program} did not answer within {HELPER_TIMEOUT:.0f} s") from exc
    except OSError as exc:
        raise CredentialError(f"cannot run credential helper {program}: {exc.strerror or exc}") from exc
    out = proc.stdout.decode("utf-8", "replace").strip()
    if proc.returncode != 0:
        detail = out or proc.stderr.decode("utf-8", "replace").strip()
        if "credentials not found" in detail.lower():
            return None
        raise CredentialError(
            f"credential helper {program} failed for {server} (exit {proc.returncode}): {detail[:200]}",
            hint=f"try `{program} get` by hand, or log in again with `docker login`",
        )
    try:
        answer = json.loads(out)
        username, secret = answer.get("Username"), answer.get("Secret")
    except (ValueError, AttributeError) as exc:
        raise CredentialError(f"credential helper {program} printed something that is not JSON credentials") from exc
    if not isinstance(secret, str) or not secret:
        return None
    if username == "<token>":  # the docker convention for an identity token
        return Credentials(identity_token=secret)
    if not isinstance(username, str) or not username:
        raise CredentialError(f"credential helper {program} returned a secret without a Username for {server}")
    return Credentials(username, secret)


def _load_config(path: Path) -> dict | None:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as exc:
        raise CredentialError(f"cannot read {_label(path)}: {getattr(exc, 'strerror', None) or exc}") from exc
    if not text.strip():
        return None
    try:
        config = json.loads(text)
    except ValueError as exc:
        raise CredentialError(
            f"malformed {_label(path)}: {exc}", hint="fix or remove the file, then log in again"
        ) from exc
    if not isinstance(config, dict):
        raise CredentialError(f"malformed {_label(path)}: expected a JSON object")
    return config


def _section(config: dict, name: str, path: Path) -> dict:
    value = config.get(name)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise CredentialError(f"malformed {_label(path)}: {name!r} is not an object")
    return value


def _helper_name(name: object, where: str, path: Path) -> str:
    if not isinstance(name, str) or not name or "/" in name or name.startswith("-"):
        raise CredentialError(f"malformed {_label(path)}: {where} is not a helper name: {name!r}")
    return name


def _label(path: Path) -> str:
    """How an error names a credentials file."""
    return f"docker config {path}" if path == config_path() else f"containers auth file {path}"


def _helper_key(host: str) -> str:
    """What a helper is asked for: docker login's own key for Docker Hub, the host otherwise."""
    return DOCKER_HUB_KEY if host == DOCKER_HUB else host
