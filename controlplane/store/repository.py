"""The Triton model repository as mlctl keeps it, over any Store.

    <repo>/<model>/config.pbtxt              generated from the signature, one per model
    <repo>/<model>/<version>/model.onnx|pt   immutable once published
    <repo>/<model>/<version>/manifest.json   sha256 of every file, provenance, parity, metadata
    <repo>/<model>/<version>/model.sig       optional: model-signing's signature over the folder (replaceable)
    <repo>/<model>/configs/<channel>.pbtxt   what a channel's replicas load (version_policy specific [v])
    <repo>/<model>/warmup/<version>/<input>  the warm-up input from the version's reference sample (raw bytes)
    <repo>/.mlctl/                           mlctl's own state: staging, channels and history, canaries, claims (S3)
    <repo>/<model>.canary/                   a canary's companion (mlctl canary start), marked by CANARY_MARK: no model

A version exists once its folder holds a manifest. Publishing never overwrites: the version folder
is assembled apart and moved into place in one step (Store.put_tree, create-only).
"""

from __future__ import annotations

import io
import logging
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from controlplane.errors import ConflictError, MlctlError, NotFoundError, UsageError
from controlplane.model import config as model_config
from controlplane.model.bundle import ExportBundle
from controlplane.model.config import FILENAMES, ServingOptions
from controlplane.model.manifest import MANIFEST, Manifest, sha256_bytes, sha256_file
from controlplane.model.provenance import current_actor, git_commit, utc_now
from controlplane.store import Store

logger = logging.getLogger(__name__)

CONFIG = "config.pbtxt"
SIGNATURE = "model.sig"  # model-signing's signature over the version folder (controlplane.security.signing)
REFERENCE = "reference.npz"
WARMUP_FILES = "warmup_files"  # manifest metadata: the version's warm-up inputs, from its reference sample
MARKER = ".mlctl/repository.json"  # also makes an empty S3 prefix a folder tritonserver accepts
_MODEL_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")
_PUBLISH_ATTEMPTS = 5
# `<model>.canary` is the Triton model a canary of <model> is served under, so no model may be published by that
# name; the companion's folder carries CANARY_MARK, and mlctl only ever deletes a folder that carries it.
CANARY_SUFFIX = ".canary"
CANARY_MARK = "mlctl-canary.json"


def check_model_name(name: str) -> str:
    if not _MODEL_NAME.match(name):
        raise UsageError(
            f"model name {name!r} is not valid", hint="use letters, digits, '_', '-' or '.', starting with a letter or digit"
        )
    if name.endswith(CANARY_SUFFIX):
        raise UsageError(
            f"model name {name!r} ends with {CANARY_SUFFIX!r}, a suffix reserved for canaries "
            f"('mlctl canary start {name[: -len(CANARY_SUFFIX)]} VERSION' serves its canary as {name!r})",
            hint="publish under another name",
        )
    return name


@dataclass(frozen=True)
class ModelSummary:
    name: str
    format: str
    versions: tuple[int, ...]
    version_policy: str

    def to_dict(self) -> dict:
        return {
            "name": self.name,
            "format": self.format,
            "versions": list(self.versions),
            "latest": max(self.versions) if self.versions else None,
            "version_policy": self.version_policy,
        }


class Repository:
    def __init__(self, store: Store) -> None:
        self.store = store

    @property
    def uri(self) -> str:
        return self.store.uri

    def require(self) -> Repository:
        if not self.store.exists():
            raise NotFoundError(
                f"model repository {self.uri} does not exist", hint="create it, or pass --repository / MLCTL_REPOSITORY"
            )
        return self

    def ensure_marker(self) -> None:
        """Mark the repository as mlctl's (idempotent)."""
        if self.store.read_versioned(MARKER)[0] is None:
            self.store.write_bytes(MARKER, b'{"layout": 1}\n')

    # --- reading ---------------------------------------------------------------------------------
    def model_names(self) -> list[str]:
        """The models; a canary's companion (`<model>.canary`, made by mlctl) is no model of its own."""
        self.require()
        return [
            n
            for n in self.store.list_dir("")
            if not n.startswith(".") and CONFIG in self.store.list_dir(n) and not self.is_canary_companion(n)
        ]

    def is_canary_companion(self, name: str) -> bool:
        return name.endswith(CANARY_SUFFIX) and CANARY_MARK in self.store.list_dir(name)

    def config(self, name: str):
        self._require_model(name)
        return model_config.parse_pbtxt(self.store.read_bytes(f"{name}/{CONFIG}").decode(), f"{self.uri}/{name}/{CONFIG}")

    def versions(self, name: str) -> list[int]:
        self._require_model(name)
        return sorted(
            int(child)
            for child in self.store.list_dir(name)
            if child.isdigit() and MANIFEST in self.store.list_dir(f"{name}/{child}")
        )

    def manifest(self, name: str, version: int) -> Manifest:
        available = self.versions(name)
        if version not in available:
            latest = f"latest is {max(available)}" if available else "it has no versions"
            raise NotFoundError(
                f"version {version} of model {name!r} not found in {self.uri} ({latest})",
                hint=f"run 'mlctl model versions {name}'",
            )
        key = f"{name}/{version}/{MANIFEST}"
        return Manifest.from_json(self.store.read_bytes(key), f"{self.uri}/{key}")

    def summary(self, name: str) -> ModelSummary:
        config = self.config(name)
        return ModelSummary(
            name=name,
            format=model_config.format_of(config),
            versions=tuple(self.versions(name)),
            version_policy=str(model_config.version_policy_of(config)),
        )

    def verify(self, name: str, version: int) -> list[str]:
        """Problems found comparing a version's files with its manifest; [] when intact."""
        manifest = self.manifest(name, version)
        prefix = f"{name}/{version}"
        present = set(self.store.list_files(prefix)) - {MANIFEST, SIGNATURE}
        problems = [f"{f}: not in the manifest" for f in sorted(present - set(manifest.files))]
        for rel, expected in sorted(manifest.files.items()):
            if rel not in present:
                problems.append(f"{rel}: missing")
            elif sha256_bytes(self.store.read_bytes(f"{prefix}/{rel}")) != expected["sha256"]:
                problems.append(f"{rel}: sha256 differs from the manifest")
        return problems

    def reference_arrays(self, name: str, version: int) -> dict[str, np.ndarray] | None:
        """The arrays of the version's reference sample (None when it was published without one)."""
        manifest = self.manifest(name, version)
        if REFERENCE not in manifest.files:
            return None
        with np.load(io.BytesIO(self.store.read_bytes(f"{name}/{version}/{REFERENCE}")), allow_pickle=False) as data:
            return {key: data[key] for key in data.files}

    def has_channel_config(self, name: str, channel: str) -> bool:
        return f"{channel}.pbtxt" in self.store.list_dir(f"{name}/configs")

    def _require_model(self, name: str) -> None:
        self.require()
        if CONFIG not in self.store.list_dir(name):
            known = ", ".join(self.model_names()) or "none"
            raise NotFoundError(f"model {name!r} not found in {self.uri} (models: {known})")

    # --- publishing ------------------------------------------------------------------------------
    def publish(
        self,
        bundle: ExportBundle,
        name: str,
        model_format: str,
        options: ServingOptions,
        metadata: dict | None = None,
        reference=None,
        sign_key: Path | None = None,
        sign_password: str | None = None,
    ) -> Manifest:
        """Add the next version of `name` from an export bundle; never overwrites anything. A `reference`
        (a checked sample with its evaluation: quality.reference.ReferenceSample) is kept with the version as the
        baseline for drift and calibration, and its evaluation goes into the manifest. With `sign_key` the folder is
        signed before it is moved into place, so the version never exists unsigned."""
        check_model_name(name)
        self.require().ensure_marker()
        self._sweep(name)
        source = bundle.file_for(model_format)
        metadata = dict(metadata or {})
        if reference is not None:
            metadata["evaluation"] = reference.evaluation
        config = model_config.build_config(name, model_format, bundle.signature, options)
        warmup = self._reference_warmup(config, reference)
        with tempfile.TemporaryDirectory(prefix="mlctl-publish-") as tmp:
            for _ in range(_PUBLISH_ATTEMPTS):
                exists = CONFIG in self.store.list_dir(name)
                if exists:
                    self._check_compatible(name, model_format, bundle)
                    children = self.store.list_dir(name) + self.store.claimed(name)
                    known = [int(c) for c in children if c.isdigit()]
                    version = max(known, default=0) + 1
                else:
                    version = 1
                tree = Path(tmp) / f"attempt-{version}-{int(exists)}"
                version_dir = tree / str(version)
                version_dir.mkdir(parents=True)
                shutil.copyfile(source, version_dir / FILENAMES[model_format])
                if reference is not None:
                    shutil.copyfile(reference.path, version_dir / REFERENCE)
                files = {n: f"{version}/{n}" for n in warmup}  # under <model>/warmup/, named in the config at a switch
                meta = {**metadata, WARMUP_FILES: files} if files else metadata
                manifest = self._manifest(name, version, model_format, bundle, version_dir, meta)
                (version_dir / MANIFEST).write_text(manifest.to_json())
                if sign_key is not None:
                    from controlplane.security.signing import sign_folder

                    sign_folder(version_dir, sign_key, sign_password)
                for input_name, rel in files.items():  # before the version exists (its manifest), never after
                    (tree / model_config.WARMUP_FOLDER / rel).parent.mkdir(parents=True, exist_ok=True)
                    (tree / model_config.WARMUP_FOLDER / rel).write_bytes(warmup[input_name])
                try:
                    if exists:
                        for rel in files.values():
                            self.store.write_bytes(f"{name}/{model_config.WARMUP_FOLDER}/{rel}",
                                                   (tree / model_config.WARMUP_FOLDER / rel).read_bytes())
                        self.store.put_tree(version_dir, f"{name}/{version}")
                    else:
                        (tree / CONFIG).write_text(model_config.to_pbtxt(config))
                        self.store.put_tree(tree, name)
                    return manifest
                except ConflictError:
                    continue  # someone published at the same moment: take the next number
        raise ConflictError(f"could not publish {name!r}: {_PUBLISH_ATTEMPTS} concurrent publishers won the race")

    def _sweep(self, name: str) -> None:
        """Remove what S3 publishes of `name` cut off while copying into place left there an hour ago or more. The
        publish goes on when this cannot be done (it is housekeeping): a warning says why."""
        try:
            swept = self.store.sweep_abandoned(name)
        except MlctlError as exc:
            logger.warning("left in place what earlier publishes of %r may have left half copied: %s", name, exc)
            return
        for key in swept:
            logger.warning("removed %s/%s: the files of a publish cut off while it was copying them into place (never a "
                           "version: it has no manifest); its number stays unused", self.uri, key)

    @staticmethod
    def _reference_warmup(config, reference) -> dict[str, bytes]:
        """The warm-up input built from the reference sample's first row, when there is one and it fits the model."""
        if reference is None:
            return {}
        with np.load(reference.path, allow_pickle=False) as data:
            return model_config.reference_warmup_data(config, data["features"][:1])

    def warmup_files(self, name: str, version: int) -> dict[str, str]:
        """The version's warm-up inputs stored under <model>/warmup/ (input name -> path); {} when it warms up on
        random inputs."""
        return dict(self.manifest(name, version).metadata.get(WARMUP_FILES, {}))

    def _check_compatible(self, name: str, model_format: str, bundle: ExportBundle) -> None:
        config = self.config(name)
        have_format = model_config.format_of(config)
        if have_format != model_format:
            raise ConflictError(
                f"model {name!r} is served as {have_format}, this version is {model_format}",
                hint="publish it under another model name",
            )
        have = model_config.signature_of(config)
        if have != bundle.signature:
            raise ConflictError(
                f"the export's signature differs from model {name!r}'s config.pbtxt "
                f"({have.to_dict()} vs {bundle.signature.to_dict()})",
                hint="publish it under another model name",
            )

    @staticmethod
    def _manifest(
        name: str, version: int, model_format: str, bundle: ExportBundle, version_dir: Path, metadata: dict
    ) -> Manifest:
        files = {
            str(p.relative_to(version_dir)): {"sha256": sha256_file(p), "size": p.stat().st_size}
            for p in sorted(version_dir.rglob("*"))
            if p.is_file()
        }
        provenance = {
            **current_actor(),
            "source": bundle.source,
            "exported_at": bundle.created_at,
            "git_commit": git_commit(),
            "frameworks": bundle.frameworks,
        }
        return Manifest(
            model=name,
            version=version,
            format=model_format,
            files=files,
            signature=bundle.signature,
            created_at=utc_now(),
            provenance=provenance,
            parity=bundle.parity.get(model_format, {}),
            metadata=metadata,
        )

