"""The error tree of cas. Every error a user can cause or meet is a CasError.

The CLI is the only layer that catches CasError: it prints ``message`` on one
line, then ``hint`` when there is one, and exits with ``exit_code``.

    CasError
    ├── BadReference            a reference that does not parse; exit code 2
    ├── BadDigest               a digest string that is not valid
    ├── IntegrityError          bytes that do not match what was promised (a registry's are named by
    │   │                       who served them, the image and the blob's place: cas.pull)
    │   ├── DigestMismatch
    │   ├── SizeMismatch
    │   └── ChangedBlobs        store files whose bytes changed after commit (export and push refuse them)
    ├── ManifestError           a manifest we cannot use
    │   ├── UnsupportedManifest
    │   ├── PlatformNotFound    an index without the platform asked for
    │   └── PlatformMismatch    a single-platform image that is not the platform asked for
    ├── RegistryError           the registry said no, or could not be reached
    │   ├── AuthError           401 / 403
    │   ├── NotFound            404
    │   ├── RateLimited         429 after every retry
    │   ├── ServerError         5xx after every retry
    │   ├── Unreachable         connection refused, DNS, dropped stream
    │   │   └── Stalled         a transfer below the minimum rate for too long (resumable)
    │   └── Blocked             a registry the configuration blocks (registries.conf)
    ├── ConfigError             a mirror configuration file cas cannot use (hosts.toml, registries.conf, daemon.json)
    ├── CredentialError         docker config or credential helper failed
    ├── StoreError              the local store
    │   ├── DiskFull
    │   ├── LockTimeout
    │   └── NotCached           an image that was never pulled
    ├── MissingBlobs            an export or push whose blobs are not all in the store
    ├── ArchiveError            an archive to import that is damaged, hostile or not an image
    │   ├── IncompleteArchive   blobs neither in the archive nor in the store
    │   └── MissingRequirements a delta whose required blobs this store lacks
    ├── Interrupted             Ctrl-C or SIGTERM; exit code 130
    ├── UsageError              arguments that cannot work together; exit code 2
    ├── OutputError             an export destination that cannot be written
    ├── Cancelled               a transfer stopped because a sibling transfer failed
    └── SomeFailed              a command over several references that went on past those that failed

PER_REFERENCE names the kinds that fail one reference of such a command, not all of them.
A few plain exceptions (besides private ones) are signals inside one module and never reach the CLI; each is
caught there and becomes one of the above or a retry: ``Transient`` (cas.registry.retry),
``StallWatch.Stalled`` (cas.registry.stall), ``Unusual`` (cas.registry.ranged),
``BadTar`` and its ``TruncatedArchive``/``UnsafeArchive`` (cas.importer.tarstream),
``TruncatedFile``/``UnsafeSource`` (cas.export.tarwriter), ``ChangedWhileExported``
(cas.export.oci).

This module imports nothing from cas so every other module can use it.
"""

from __future__ import annotations

import errno
from collections.abc import Iterable


class CasError(Exception):
    """Base of every error a user is meant to read."""

    exit_code = 1

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint


class BadReference(CasError):
    exit_code = 2


class BadDigest(CasError):
    pass


class IntegrityError(CasError):
    pass


class DigestMismatch(IntegrityError):
    def __init__(self, expected: object, actual: object, *, what: str = "blob") -> None:
        super().__init__(
            f"{what} digest mismatch: expected {expected}, got {actual}",
            hint="the registry served different bytes than it promised; nothing was stored",
        )
        self.expected = expected
        self.actual = actual


class SizeMismatch(IntegrityError):
    def __init__(self, digest: object, expected: int, actual: int) -> None:
        super().__init__(
            f"size mismatch for {digest}: expected {expected} bytes, got {actual}",
            hint="the registry served a truncated or oversized blob; nothing was stored",
        )
        self.digest = digest
        self.expected = expected
        self.actual = actual


class ChangedBlobs(IntegrityError):
    """Blobs whose files in the store no longer hold the bytes that were committed.

    ``changed`` holds one line per blob: digest, image and position, what is wrong.
    ``pulled``: an ``export --pull`` has just downloaded them again, so a pull is no remedy.
    """

    def __init__(
        self,
        changed: list[str],
        refs: list[str],
        outcome: str = "nothing was written",
        *,
        action: str = "export",
        pulled: bool = False,
    ) -> None:
        lines = "\n  ".join(changed)
        remedy = (
            "they changed again after --pull downloaded them: something else writes into the store (`cas verify`)"
            if pulled
            else f"run `cas pull {' '.join(refs)}`: it downloads them again and replaces them"
        )
        super().__init__(
            f"cannot {action}: {len(changed)} blob(s) in the store changed after they were committed:\n  {lines}",
            hint=f"{remedy}; {outcome}",
        )
        self.changed = changed


class ManifestError(CasError):
    pass


class UnsupportedManifest(ManifestError):
    pass


class PlatformNotFound(ManifestError):
    def __init__(self, wanted: str, available: list[str]) -> None:
        listed = ", ".join(available) if available else "none"
        super().__init__(
            f"no manifest for platform {wanted}; available: {listed}",
            hint="choose one with --platform OS/ARCH[/VARIANT]",
        )
        self.wanted = wanted
        self.available = available


class PlatformMismatch(ManifestError):
    """A plain manifest (no index) is for one platform; the user asked for another."""

    def __init__(self, ref: str, actual: str | None, wanted: list[str]) -> None:
        super().__init__(
            f"{ref} is a single-platform image for {actual or 'an unknown platform'}, not {', '.join(wanted)}; "
            "nothing was cached",
            hint=f"pull it without --platform (it runs on {actual or 'its own platform'}), "
            "or use a tag built for the platform you need",
        )
        self.actual = actual
        self.wanted = wanted


class RegistryError(CasError):
    pass


class AuthError(RegistryError):
    pass


class NotFound(RegistryError):
    pass


class RateLimited(RegistryError):
    pass


class ServerError(RegistryError):
    pass


class Unreachable(RegistryError):
    pass


class Stalled(Unreachable):
    pass


class Blocked(RegistryError):
    pass


class ConfigError(CasError):
    pass


class CredentialError(CasError):
    pass


class StoreError(CasError):
    pass


class DiskFull(StoreError):
    pass


class LockTimeout(StoreError):
    pass


class NotCached(StoreError):
    @classmethod
    def references(cls, refs: list[str], hint: str, *, platform: object = None) -> NotCached:
        """The one wording, in every command, for references the store has no record of."""
        return cls(f"not in the cache{f' for {platform}' if platform else ''}: {', '.join(refs)}", hint=hint)


class MissingBlobs(CasError):
    """An export or push that would reference blobs the store does not hold.

    ``missing`` holds one line per missing blob: digest, image and position.
    """

    def __init__(self, missing: list[str], refs: list[str], *, action: str = "export", offer_pull: bool = True) -> None:
        lines = "\n  ".join(missing)
        pulls = " ".join(refs)
        also = " or export with --pull" if offer_pull else ""  # never after --pull: that would go round in a circle
        hint = f"run `cas pull {pulls}`{also}; nothing was written"
        if action != "export":
            hint = f"run `cas pull {pulls}` first; nothing was sent"
        super().__init__(f"cannot {action}: {len(missing)} blob(s) missing from the store:\n  {lines}", hint=hint)
        self.missing = missing


class ArchiveError(CasError):
    """An archive ``cas import`` cannot take: not a tar, truncated, unsafe, or not an image."""

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(
            message, hint=hint or "the archive is damaged or not what it claims to be; nothing was recorded"
        )


class IncompleteArchive(ArchiveError):
    """An import whose manifests name blobs that are neither in the archive nor in the store."""

    def __init__(self, missing: list[str]) -> None:
        lines = "\n  ".join(missing)
        super().__init__(
            f"cannot import: {len(missing)} blob(s) neither in the archive nor in the store:\n  {lines}",
            hint="import an archive that holds them first (a full export of the base image); no image was recorded",
        )
        self.missing = missing


class MissingRequirements(ArchiveError):
    """A delta archive whose ``requires`` this store does not hold: refused before anything is written."""

    def __init__(self, missing: list[str], bases: list[str]) -> None:
        lines = "\n  ".join(missing)
        super().__init__(
            f"cannot import this delta: {len(missing)} required blob(s) missing from this store:\n  {lines}",
            hint=f"import a full archive of {', '.join(bases)} first, or ask the sender for a delta against "
            "what this store holds (`cas export --since-inventory`); nothing was written",
        )
        self.missing = missing


class Interrupted(CasError):
    exit_code = 130

    def __init__(self) -> None:
        super().__init__("interrupted", hint="the store is consistent; run the command again to finish")


class UsageError(CasError):
    """A combination of arguments that cannot work."""

    exit_code = 2


class OutputError(CasError):
    """An export's destination cannot be written."""


class Cancelled(CasError):
    """A transfer stopped because another one of the same command failed first."""


class SomeFailed(CasError):
    """A command over several references that went on past the ones that failed (each said already)."""

    def __init__(self, message: str, *, hint: str, errors: Iterable[CasError]) -> None:
        super().__init__(message, hint=hint)
        codes = {error.exit_code for error in errors}
        self.exit_code = codes.pop() if len(codes) == 1 else 1  # one kind of failure keeps its code


# Failures that belong to one reference: a command over several goes on with the others. Anything
# else (the store, the configuration, the credentials files, an interrupt) would fail them all.
PER_REFERENCE = (RegistryError, ManifestError, IntegrityError)


def disk_full(exc: OSError, what: str, *, hint: str) -> DiskFull | None:
    """The one place an OSError is recognised as a full disk (ENOSPC, or EDQUOT: over quota)."""
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return DiskFull(f"no space left on device while writing {what}", hint=hint)
    return None
