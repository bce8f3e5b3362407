"""The per-version manifest: what a published version is, where it came from, and its file hashes."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

from controlplane.errors import UsageError
from controlplane.model.signature import Signature

MANIFEST = "manifest.json"
SCHEMA = 1


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


@dataclass(frozen=True)
class Manifest:
    model: str
    version: int
    format: str
    files: dict[str, dict]  # relative path -> {"sha256": ..., "size": ...}
    signature: Signature
    created_at: str
    provenance: dict = field(default_factory=dict)  # user, host, git commit, source, frameworks
    parity: dict = field(default_factory=dict)
    metadata: dict = field(default_factory=dict)  # user-supplied: evaluation metrics, notes

    def to_json(self) -> str:
        data = asdict(self)
        data["signature"] = self.signature.to_dict()
        return json.dumps({"schema": SCHEMA, **data}, indent=2, sort_keys=True) + "\n"

    @classmethod
    def from_json(cls, text: str | bytes, where: str) -> Manifest:
        try:
            data = json.loads(text)
            return cls(
                model=data["model"],
                version=int(data["version"]),
                format=data["format"],
                files=dict(data["files"]),
                signature=Signature.from_dict(data["signature"]),
                created_at=data["created_at"],
                provenance=data.get("provenance", {}),
                parity=data.get("parity", {}),
                metadata=data.get("metadata", {}),
            )
        except (ValueError, KeyError, TypeError) as exc:
            raise UsageError(f"{where} is not a valid mlctl manifest: {exc}") from exc

    def summary(self) -> dict:
        return {
            "model": self.model,
            "version": self.version,
            "format": self.format,
            "created_at": self.created_at,
            "size_bytes": sum(int(f["size"]) for f in self.files.values()),
            "parity_passed": self.parity.get("passed"),
            "metadata": self.metadata,
        }
