"""``--htpasswd FILE``: HTTP Basic against bcrypt entries, as the distribution registry reads them.

Only bcrypt lines (``user:$2y$...``, what ``htpasswd -B`` writes) are accepted; a file with
any other kind of hash is refused at start, not at the first request. A successful check
is remembered (by a hash of the header, never the password itself) so a pull's many
requests cost one bcrypt, which is slow on purpose.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
from collections.abc import Callable
from pathlib import Path

from aiohttp import hdrs, web

from cas.errors import UsageError
from cas.serve.errcode import ServeError

REALM = "cas serve"
CHALLENGE = {hdrs.WWW_AUTHENTICATE: f'Basic realm="{REALM}"'}


class Htpasswd:
    def __init__(self, users: dict[str, bytes]) -> None:
        self.users = users
        self._good: set[bytes] = set()

    @classmethod
    def read(cls, path: Path) -> Htpasswd:
        """The file's users; UsageError naming the line that is not ``user:bcrypt-hash``."""
        try:
            text = Path(path).read_text()
        except OSError as exc:
            raise UsageError(f"cannot read --htpasswd {path}: {exc.strerror}") from None
        users = {}
        for number, line in enumerate(text.splitlines(), 1):
            if not line.strip() or line.startswith("#"):
                continue
            user, _, hashed = line.strip().partition(":")
            if not user or not hashed.startswith(("$2y$", "$2b$", "$2a$")):
                raise UsageError(
                    f"--htpasswd {path}, line {number}: not user:bcrypt-hash",
                    hint="write it with `htpasswd -Bbn USER PASSWORD`",
                )
            users[user] = hashed.encode()
        if not users:
            raise UsageError(f"--htpasswd {path} names no user", hint="write it with `htpasswd -Bbn USER PASSWORD`")
        return cls(users)

    def check(self, header: str | None) -> bool:
        """Whether an ``Authorization`` header names a user of the file with the right password."""
        if not header or not header.startswith("Basic "):
            return False
        key = hashlib.sha256(header.encode()).digest()
        if key in self._good:
            return True
        try:
            user, _, password = base64.b64decode(header[6:], validate=True).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            return False
        import bcrypt  # only a server with --htpasswd loads it

        hashed = self.users.get(user)
        if hashed is None or not bcrypt.checkpw(password.encode(), hashed):
            return False
        self._good.add(key)
        return True


def required(htpasswd: Htpasswd) -> Callable:
    """Middleware: every request but none carries valid credentials, else 401 UNAUTHORIZED with the challenge."""

    @web.middleware
    async def authenticate(request: web.Request, handler: Callable) -> web.StreamResponse:
        if not await asyncio.to_thread(htpasswd.check, request.headers.get(hdrs.AUTHORIZATION)):
            raise ServeError("UNAUTHORIZED", "authentication required", headers=CHALLENGE)
        return await handler(request)

    return authenticate
