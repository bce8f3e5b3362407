"""The model-repository store: one small interface over local disk and S3.

Keys are '/'-separated paths relative to the repository root. Implementations translate their SDK's
errors into the mlctl error tree where they call it.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path


class Store(ABC):
    uri: str  # what the user named, e.g. /srv/models or s3://bucket/prefix

    @property
    @abstractmethod
    def triton_uri(self) -> str:
        """The repository location as tritonserver's --model-repository takes it."""

    @abstractmethod
    def exists(self) -> bool:
        """Whether the repository root itself exists."""

    @abstractmethod
    def list_dir(self, key: str) -> list[str]:
        """Names of the immediate children of `key` (files and folders); [] when absent."""

    @abstractmethod
    def list_files(self, key: str) -> list[str]:
        """Every file under `key`, as keys relative to `key`, sorted."""

    @abstractmethod
    def read_bytes(self, key: str) -> bytes:
        """The file's content; NotFoundError when absent."""

    @abstractmethod
    def write_bytes(self, key: str, data: bytes) -> None:
        """Replace the file atomically: readers see the old or the new content, never a mix."""

    @abstractmethod
    def read_versioned(self, key: str) -> tuple[bytes | None, str | None]:
        """The content and a token naming this exact content; (None, None) when absent."""

    @abstractmethod
    def write_if(self, key: str, data: bytes, token: str | None) -> str:
        """Compare-and-swap: write only if the key still holds `token` (None: only if absent).
        Returns the new token; ConflictError when someone else wrote first."""

    @abstractmethod
    def put_tree(self, local_dir: Path, key: str) -> None:
        """Copy a local folder to `key`, all or nothing; ConflictError when `key` exists already."""

    def claimed(self, key: str) -> list[str]:
        """Children of `key` reserved by a put_tree that may not have finished (stores without rename)."""
        return []

    def sweep_abandoned(self, key: str) -> list[str]:
        """Remove the partial trees that put_trees under `key` cut off long ago left in place; the keys swept
        (stores whose put_tree is all or nothing leave none)."""
        return []

    @abstractmethod
    def delete(self, key: str) -> None:
        """Remove one file (absent is fine)."""

    @abstractmethod
    def delete_tree(self, key: str) -> None:
        """Remove `key` and everything under it (absent is fine)."""
