"""The distribution spec's error codes, in one table, and the JSON body every error answer carries.

Handlers raise ``ServeError``; the server's middleware turns it into
``{"errors": [{"code", "message", "detail"}]}`` with the table's status, as the
distribution registry's ``errcode`` package does. Imports nothing from aiohttp.
"""

from __future__ import annotations

import json

STATUS = {
    "BLOB_UNKNOWN": 404,
    "MANIFEST_UNKNOWN": 404,
    "NAME_UNKNOWN": 404,
    "DIGEST_INVALID": 400,
    "NAME_INVALID": 400,
    "TAG_INVALID": 400,
    "PAGINATION_NUMBER_INVALID": 400,
    "RANGE_INVALID": 416,
    "UNAUTHORIZED": 401,
    "DENIED": 403,
    "UNSUPPORTED": 405,
    "UNAVAILABLE": 503,
    # not the spec's: /archive/ and /metrics answer these
    "PARAMETER_INVALID": 400,
    "INTERNAL": 500,
}


class ServeError(Exception):
    """One spec error: ``code`` is a key of STATUS; ``detail`` goes to the client as JSON."""

    def __init__(self, code: str, message: str, detail: object = None, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.detail = detail
        self.headers = headers or {}  # e.g. a 401's WWW-Authenticate

    @property
    def status(self) -> int:
        return STATUS[self.code]

    def body(self) -> bytes:
        error: dict = {"code": self.code, "message": self.message}
        if self.detail is not None:
            error["detail"] = self.detail
        return json.dumps({"errors": [error]}).encode()
