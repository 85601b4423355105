"""``cas serve``: the store as a read-only OCI registry that docker, containerd, podman and skopeo pull from.

One more sink with the same rules as export: routes -> one name mapper (``names``) -> the
store (``content``), blobs sent zero-copy. It writes to the index only leases and last-use
times (``leases``); it never writes a blob.
"""

from cas.serve.server import DEFAULT_LISTEN, ServeOptions, parse_listen, serve

__all__ = ["DEFAULT_LISTEN", "ServeOptions", "parse_listen", "serve"]
