"""Pure helpers for the Distribution API's wire format: error bodies, Content-Range, hosts.

No I/O and no httpx, so every function here is tested with plain values.
"""

from __future__ import annotations

import ipaddress
import json
import re

_CONTENT_RANGE = re.compile(r"\s*bytes\s+(?:(\d+)-(\d+)|\*)\s*/\s*(\d+|\*)\s*", re.IGNORECASE)


def is_loopback(host: str) -> bool:
    """``localhost`` or a loopback address (127.0.0.0/8, ::1), with or without a port.

    Decided on the address, never on a name's prefix: ``127.example.com`` is a public
    host and gets TLS like any other.
    """
    name = host
    if name.startswith("["):  # [::1] or [::1]:5000
        name = name[1 : name.find("]")] if "]" in name else name
    elif name.count(":") == 1:  # host:port (a bare IPv6 address has more colons)
        name = name.rsplit(":", 1)[0]
    if name.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def error_detail(body: bytes, limit: int = 300) -> tuple[str | None, str]:
    """The first error code and the messages of a registry error body.

    ``{"errors": [{"code": "MANIFEST_UNKNOWN", "message": "manifest unknown"}]}``
    gives ``("MANIFEST_UNKNOWN", "manifest unknown")``. Anything else gives
    ``(None, <the body's text, shortened>)``.
    """
    text = body[:4096].decode("utf-8", "replace").strip()
    try:
        doc = json.loads(text)
    except ValueError:
        doc = None
    errors = doc.get("errors") if isinstance(doc, dict) else None
    if isinstance(errors, list) and errors and all(isinstance(e, dict) for e in errors):
        code = errors[0].get("code")
        messages = [str(e.get("message") or e.get("code") or "") for e in errors]
        return (str(code) if code else None), "; ".join(m for m in messages if m)[:limit]
    if isinstance(doc, dict) and isinstance(doc.get("details") or doc.get("error"), str):
        return None, str(doc.get("details") or doc.get("error"))[:limit]
    return None, " ".join(text.split())[:limit]


def parse_content_range(value: str | None) -> tuple[int | None, int | None, int | None] | None:
    """``bytes 10-99/100`` -> ``(10, 99, 100)``; ``bytes */100`` -> ``(None, None, 100)``; garbage -> None."""
    if not value:
        return None
    match = _CONTENT_RANGE.fullmatch(value)
    if not match:
        return None
    start, end, total = match.groups()
    return (
        int(start) if start is not None else None,
        int(end) if end is not None else None,
        int(total) if total != "*" else None,
    )


_LINK_NEXT = re.compile(r'<([^>]*)>\s*;[^,]*rel="?next"?', re.IGNORECASE)


def next_link(header: str | None, current: str) -> str | None:
    """The next page of a paged listing (RFC 5988 ``Link: </v2/r/tags/list?last=x&n=2>; rel="next"``),
    resolved against the page's own URL; None on the last page."""
    from urllib.parse import urljoin

    match = _LINK_NEXT.search(header or "")
    return urljoin(current, match.group(1)) if match else None


def tag_page(data: bytes, shown: str) -> list[str]:
    """The ``tags`` of one page of ``/tags/list`` (null for a repository without tags)."""
    from cas.errors import RegistryError

    try:
        body = json.loads(data)
        tags = body.get("tags") or []
    except (ValueError, AttributeError):
        tags = None
    if not isinstance(tags, list) or not all(isinstance(t, str) for t in tags):
        raise RegistryError(f"the tag list of {shown} is not a JSON object with a list of tags")
    return tags
