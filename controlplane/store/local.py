"""A repository on local disk. Writes go through a staging folder on the same filesystem and a rename."""

from __future__ import annotations

import errno
import hashlib
import os
import shutil
import socket
import time
import uuid
from pathlib import Path

from controlplane.errors import ConflictError, NotFoundError, UsageError
from controlplane.processes import process_exists
from controlplane.store.base import Store

STAGING = ".mlctl/staging"
LOCK_STALE_S = 30.0  # a lock older than this was left by a killed writer (the critical section takes ms)
LOCK_WAIT_S = 5.0


def _lock_is_stale(lock: Path) -> bool:
    try:
        owner = lock.read_text().split()
        age = time.time() - lock.stat().st_mtime
    except (FileNotFoundError, OSError):
        return False  # gone already, or being written: look again
    if len(owner) == 2 and owner[0].isdigit() and owner[1] == socket.gethostname():
        return not process_exists(int(owner[0]))
    return age > LOCK_STALE_S


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class LocalStore(Store):
    def __init__(self, root: str | Path) -> None:
        self.root = Path(root).expanduser().absolute()
        self.uri = str(self.root)

    @property
    def triton_uri(self) -> str:
        return str(self.root)

    def _path(self, key: str) -> Path:
        path = (self.root / key).resolve() if key else self.root
        if path != self.root and self.root not in path.parents:
            raise UsageError(f"key {key!r} points outside the repository {self.root}")
        return path

    def exists(self) -> bool:
        return self.root.is_dir()

    def list_dir(self, key: str) -> list[str]:
        path = self._path(key)
        return sorted(os.listdir(path)) if path.is_dir() else []

    def list_files(self, key: str) -> list[str]:
        base = self._path(key)
        if not base.is_dir():
            return []
        return sorted(str(p.relative_to(base)) for p in base.rglob("*") if p.is_file())

    def read_bytes(self, key: str) -> bytes:
        try:
            return self._path(key).read_bytes()
        except FileNotFoundError:
            raise NotFoundError(f"{key} not found in repository {self.uri}") from None

    def _staging(self) -> Path:
        path = self.root / STAGING / uuid.uuid4().hex
        path.mkdir(parents=True)
        return path

    def write_bytes(self, key: str, data: bytes) -> None:
        target = self._path(key)
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.parent / f".{target.name}.{uuid.uuid4().hex}.tmp"
        try:
            with open(tmp, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, target)
            fsync_dir(target.parent)
        finally:
            tmp.unlink(missing_ok=True)

    def read_versioned(self, key: str) -> tuple[bytes | None, str | None]:
        try:
            data = self._path(key).read_bytes()
        except FileNotFoundError:
            return None, None
        return data, hashlib.sha256(data).hexdigest()

    def write_if(self, key: str, data: bytes, token: str | None) -> str:
        target = self._path(key)
        target.parent.mkdir(parents=True, exist_ok=True)
        lock = target.with_name(target.name + ".lock")
        self._acquire(lock, key)
        try:
            _, current = self.read_versioned(key)
            if current != token:
                raise ConflictError(f"{key} in {self.uri} was changed by someone else; retry")
            self.write_bytes(key, data)
            return hashlib.sha256(data).hexdigest()
        finally:
            lock.unlink(missing_ok=True)

    @staticmethod
    def _acquire(lock: Path, key: str) -> None:
        """O_EXCL lock file around a read-compare-write. A lock whose writer was killed is broken: at once
        when it names a process of this host that is gone, after LOCK_STALE_S otherwise."""
        deadline = time.monotonic() + LOCK_WAIT_S
        while True:
            try:
                fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
                os.write(fd, f"{os.getpid()} {socket.gethostname()}\n".encode())
                os.close(fd)
                return
            except FileExistsError:
                if _lock_is_stale(lock):
                    lock.unlink(missing_ok=True)
                    continue
                if time.monotonic() > deadline:
                    raise ConflictError(f"{key} is locked by another writer ({lock})") from None
                time.sleep(0.01)

    def put_tree(self, local_dir: Path, key: str) -> None:
        target = self._path(key)
        if target.exists():
            raise ConflictError(f"{key} already exists in repository {self.uri}")
        staging = self._staging()
        try:
            staged = staging / "tree"
            shutil.copytree(local_dir, staged)
            for path in staged.rglob("*"):
                if path.is_file():
                    with open(path, "rb") as f:
                        os.fsync(f.fileno())
            target.parent.mkdir(parents=True, exist_ok=True)
            try:
                # rename() of a folder onto an existing non-empty folder fails: create-only semantics.
                os.rename(staged, target)
            except OSError as exc:
                if exc.errno in (errno.EEXIST, errno.ENOTEMPTY):
                    raise ConflictError(f"{key} already exists in repository {self.uri}") from exc
                raise
            fsync_dir(target.parent)
        finally:
            shutil.rmtree(staging, ignore_errors=True)

    def delete(self, key: str) -> None:
        self._path(key).unlink(missing_ok=True)

    def delete_tree(self, key: str) -> None:
        shutil.rmtree(self._path(key), ignore_errors=True)
