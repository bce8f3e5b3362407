"""Open a repository store from a URI: a local path, or s3://bucket/prefix."""

from __future__ import annotations

from controlplane.errors import UsageError
from controlplane.store.base import Store


def open_store(uri: str) -> Store:
    if not uri:
        raise UsageError("no model repository given", hint="pass --repository or set MLCTL_REPOSITORY")
    if uri.startswith("s3://"):
        from controlplane.store.s3 import S3Store

        return S3Store(uri)
    if "://" in uri:
        raise UsageError(f"repository {uri!r}: only local paths and s3:// URIs are supported")
    from controlplane.store.local import LocalStore

    return LocalStore(uri)


__all__ = ["Store", "open_store"]
