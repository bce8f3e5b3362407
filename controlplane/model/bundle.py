"""An export bundle: the folder `mlctl export` writes and `mlctl publish` reads.

    <dir>/export.json   signature, parity per format, source, framework versions
    <dir>/model.onnx    when exported to ONNX
    <dir>/model.pt      when exported to TorchScript
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from controlplane.errors import NotFoundError, UsageError
from controlplane.model.config import FILENAMES
from controlplane.model.signature import Signature

BUNDLE_FILE = "export.json"


@dataclass(frozen=True)
class ExportBundle:
    path: Path
    signature: Signature
    formats: tuple[str, ...]
    parity: dict  # format -> {"max_abs_error", "max_rel_error", "passed", ...}
    source: str
    created_at: str
    frameworks: dict = field(default_factory=dict)

    def file_for(self, model_format: str) -> Path:
        if model_format not in self.formats:
            raise UsageError(
                f"export {self.path} has no {model_format} model", hint=f"it has: {', '.join(self.formats)}"
            )
        return self.path / FILENAMES[model_format]

    def to_json(self) -> str:
        data = {
            "signature": self.signature.to_dict(),
            "formats": list(self.formats),
            "parity": self.parity,
            "source": self.source,
            "created_at": self.created_at,
            "frameworks": self.frameworks,
        }
        return json.dumps(data, indent=2, sort_keys=True) + "\n"

    @classmethod
    def load(cls, path: str | Path) -> ExportBundle:
        path = Path(path)
        meta = path / BUNDLE_FILE
        if not meta.is_file():
            raise NotFoundError(
                f"{path} is not an export (no {BUNDLE_FILE})", hint="create one with 'mlctl export'"
            )
        try:
            data = json.loads(meta.read_text())
            bundle = cls(
                path=path,
                signature=Signature.from_dict(data["signature"]),
                formats=tuple(data["formats"]),
                parity=data.get("parity", {}),
                source=data.get("source", ""),
                created_at=data.get("created_at", ""),
                frameworks=data.get("frameworks", {}),
            )
        except (ValueError, KeyError, TypeError) as exc:
            raise UsageError(f"{meta} is not a valid export description: {exc}") from exc
        for fmt in bundle.formats:
            if not (path / FILENAMES[fmt]).is_file():
                raise NotFoundError(f"export {path} lists {fmt} but {FILENAMES[fmt]} is missing")
        return bundle
