"""A Docker token server (the Bearer flow of Docker Hub) for the registry's ``auth.token`` mode.

Why: cas must fetch, cache and reuse bearer tokens the way it will against Docker Hub. The
real registry verifies our RS256 JWTs through the ``x5c`` header against the self-signed
certificate written here, which the registry config names as its ``rootcertbundle``.

Protocol: ``GET /token?service=S&scope=repository:NAME:pull[,push]`` (scope may repeat), with
optional Basic auth; answers ``{"token", "access_token", "expires_in", "issued_at"}``.
Anonymous callers get pull (like public images on Docker Hub) unless ``anonymous=False``;
push needs valid credentials; wrong credentials get 401. ``POST /token`` with an OAuth2
password grant form is accepted too.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import secrets
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.x509.oid import NameOID

from .tools import LocalServer


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


@dataclass(frozen=True)
class TokenRequest:
    """One request the token server answered: what was asked, by whom, what was granted."""

    method: str
    service: str | None
    scopes: tuple[str, ...]
    user: str | None  # None for anonymous
    status: int
    granted: tuple[tuple[str, tuple[str, ...]], ...]  # ((repository, actions), ...)


class TokenServer:
    """Issues RS256 JWTs signed by a fresh self-signed cert; counts the token requests it served."""

    def __init__(
        self,
        workdir: Path,
        *,
        users: dict[str, str] | None = None,
        anonymous: bool = True,
        service: str = "cas-test-registry",
        issuer: str = "cas-test-token-issuer",
        expires_in: int = 300,
    ) -> None:
        self.workdir = Path(workdir)
        self.users = dict(users or {})
        self.anonymous = anonymous
        self.service = service
        self.issuer = issuer
        self.expires_in = expires_in
        self.cert_path = self.workdir / "token-signer.crt"
        self._lock = threading.Lock()
        self._log: list[TokenRequest] = []
        self._failures: list[int] = []
        self._server: LocalServer | None = None
        self._key, self._cert_der = self._make_signer()

    # --- lifecycle -------------------------------------------------------------------
    def start(self) -> TokenServer:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.cert_path.write_bytes(
            x509.load_der_x509_certificate(self._cert_der).public_bytes(serialization.Encoding.PEM)
        )
        self._server = LocalServer(_Handler, self, "token-server")
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop()
            self._server = None

    def __enter__(self) -> TokenServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def running(self) -> bool:
        return self._server is not None

    @property
    def port(self) -> int:
        assert self._server is not None, "token server not started"
        return self._server.server_address[1]

    @property
    def realm(self) -> str:
        return f"http://127.0.0.1:{self.port}/token"

    # --- measurement and knobs ---------------------------------------------------------
    @property
    def token_requests(self) -> int:
        """How many token requests arrived (any outcome) since start or the last ``reset()``."""
        with self._lock:
            return len(self._log)

    @property
    def requests(self) -> list[TokenRequest]:
        with self._lock:
            return list(self._log)

    def reset(self) -> None:
        with self._lock:
            self._log.clear()
            self._failures.clear()

    def fail_next(self, status: int = 503, count: int = 1) -> None:
        """Answer the next ``count`` token requests with ``status`` (an outage of the auth service)."""
        with self._lock:
            self._failures.extend([status] * count)

    # --- token logic -----------------------------------------------------------------
    def _make_signer(self) -> tuple[rsa.RSAPrivateKey, bytes]:
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "cas test token signer")])
        now = dt.datetime.now(dt.UTC)
        cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(days=1))
            .not_valid_after(now + dt.timedelta(days=3650))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    key_cert_sign=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    crl_sign=False,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .sign(key, hashes.SHA256())
        )
        return key, cert.public_bytes(serialization.Encoding.DER)

    def sign(self, claims: dict) -> str:
        """An RS256 JWT with ``x5c`` = [our cert], which the registry checks against its rootcertbundle."""
        header = {"typ": "JWT", "alg": "RS256", "x5c": [base64.b64encode(self._cert_der).decode()]}
        signing_input = _b64url(json.dumps(header).encode()) + "." + _b64url(json.dumps(claims).encode())
        signature = self._key.sign(signing_input.encode(), padding.PKCS1v15(), hashes.SHA256())
        return signing_input + "." + _b64url(signature)

    def grant(self, user: str | None, scopes: list[str]) -> list[dict]:
        """Docker Hub's rule: grant the subset of requested actions this caller may have."""
        access = []
        for scope in scopes:
            parts = scope.split(":")
            if len(parts) < 3:
                continue
            kind, name, actions = parts[0], ":".join(parts[1:-1]), parts[-1].split(",")
            allowed = set(actions) if user is not None else ({"pull"} & set(actions))
            if allowed:
                access.append({"type": kind, "name": name, "actions": sorted(allowed)})
        return access

    def issue(self, user: str | None, scopes: list[str]) -> tuple[dict, list[dict]]:
        now = int(time.time())
        access = self.grant(user, scopes)
        claims = {
            "iss": self.issuer,
            "sub": user or "",
            "aud": self.service,
            "exp": now + self.expires_in,
            "nbf": now - 10,
            "iat": now,
            "jti": secrets.token_hex(8),
            "access": access,
        }
        token = self.sign(claims)
        issued = dt.datetime.fromtimestamp(now, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        return {"token": token, "access_token": token, "expires_in": self.expires_in, "issued_at": issued}, access

    def _take_failure(self) -> int | None:
        with self._lock:
            return self._failures.pop(0) if self._failures else None

    def _record(self, entry: TokenRequest) -> None:
        with self._lock:
            self._log.append(entry)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: object) -> None:  # keep pytest output clean
        pass

    def do_GET(self) -> None:
        query = parse_qs(urlsplit(self.path).query)
        self._answer("GET", query, self._basic_credentials())

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        form = parse_qs(self.rfile.read(length).decode()) if length else {}
        creds = None
        if form.get("grant_type") == ["password"]:
            creds = (form.get("username", [""])[0], form.get("password", [""])[0])
        # OAuth2 sends scopes space-separated in one field.
        form["scope"] = [s for v in form.get("scope", []) for s in v.split()]
        self._answer("POST", form, creds or self._basic_credentials())

    def _basic_credentials(self) -> tuple[str, str] | None:
        header = self.headers.get("Authorization", "")
        if not header.lower().startswith("basic "):
            return None
        try:
            user, _, password = base64.b64decode(header[6:].strip()).decode().partition(":")
        except ValueError:
            return ("", "")
        return user, password

    def _answer(self, method: str, query: dict[str, list[str]], creds: tuple[str, str] | None) -> None:
        ts: TokenServer = self.server.owner  # type: ignore[attr-defined]
        service = (query.get("service") or [None])[0]
        scopes = query.get("scope", [])
        user = creds[0] if creds else None
        failure = ts._take_failure()
        granted: list[dict] = []
        if failure is not None:
            status, body = failure, {"details": "injected failure"}
        elif creds is not None and ts.users.get(creds[0]) != creds[1]:
            status, body = 401, {"details": "incorrect username or password"}
        elif creds is None and not ts.anonymous:
            status, body = 401, {"details": "authentication required"}
        elif service is not None and service != ts.service:
            status, body = 400, {"details": f"unknown service {service!r}"}
        else:
            status = 200
            body, granted = ts.issue(user, scopes)
        ts._record(
            TokenRequest(
                method,
                service,
                tuple(scopes),
                user,
                status,
                tuple((g["name"], tuple(g["actions"])) for g in granted),
            )
        )
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        if status == 401:
            self.send_header("WWW-Authenticate", 'Basic realm="cas-test-token"')
        self.end_headers()
        self.wfile.write(data)
