"""Publishing a pipeline version: its components first, its ensemble version (with the manifest) last.

    <repo>/P.pre/<v>/model.py, step.py     the pre-processing step (Python backend)
    <repo>/P.model/<v>/model.onnx|pt       a copy of the published model version's file, checked against its manifest
    <repo>/P.post/<v>/model.py, step.py    the post-processing step
    <repo>/P/<v>/ensemble.pbtxt            this version's ensemble config, pinning version v of every component
    <repo>/P/<v>/reference.npz            optional: raw inputs, the pipeline's answers, labels (as a model's)
    <repo>/P/<v>/manifest.json             sha256 of every component file, the source model and its manifest
    <repo>/<component>/config.pbtxt        what a plain server start loads: version v everywhere

A pipeline version exists once `P/<v>/manifest.json` does; it is never overwritten. Every check (the step files,
their connections, the source model's integrity) runs before the first write.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from controlplane.errors import CheckFailedError, ConflictError, UsageError
from controlplane.model import config as model_config
from controlplane.model import pipeline as pl
from controlplane.model.config import FILENAMES, ServingOptions, VersionPolicy
from controlplane.model.manifest import MANIFEST, Manifest, sha256_bytes, sha256_file
from controlplane.model.provenance import current_actor, git_commit, utc_now
from controlplane.store.repository import (
    CONFIG,
    REFERENCE,
    Repository,
    check_model_name,
)

ENSEMBLE_FILE = "ensemble.pbtxt"


def publish_pipeline(repo: Repository, name: str, model: str, model_version: int, pre: Path | None, post: Path | None,
                     metadata: dict | None = None, reference=None, sign_key: Path | None = None,
                     sign_password: str | None = None) -> Manifest:
    """Add the next version of pipeline `name`: pre -> `model` at `model_version` -> post. A `reference` (a checked
    quality.reference.ReferenceSample of the pipeline's raw inputs and answers) is kept as a model's is: the baseline
    for `mlctl monitor` and the gate's held-out set when it has labels. With `sign_key` the pipeline's version
    folder (its manifest pins every component file) is signed before it is put in place."""
    check_model_name(name)
    if pre is None and post is None:
        raise UsageError(f"pipeline {name!r} needs a --pre or a --post step (or both)")
    if name == model or name in (pl.component_name(model, r) for r in (pl.PRE, pl.MODEL, pl.POST)):
        raise UsageError(f"pipeline name {name!r} clashes with model {model!r}", hint="name the pipeline differently")
    source = repo.manifest(model, model_version)
    problems = repo.verify(model, model_version)
    if problems:
        raise CheckFailedError(f"version {model_version} of {model!r} does not match its manifest: {'; '.join(problems)}",
                               hint="nothing was written; publish a fresh version of the model")
    steps = {}
    for role, path in ((pl.PRE, pre), (pl.POST, post)):
        if path is not None:
            step, process = pl.load_step(path, role)
            pl.smoke_test(step, process, source.signature.batched)
            steps[role] = step
    signature = pl.check_connections(source.signature, steps.get(pl.PRE), steps.get(pl.POST))
    repo.require().ensure_marker()
    version = _next_version(repo, name, [pl.MODEL, *steps])
    with tempfile.TemporaryDirectory(prefix="mlctl-pipeline-") as tmp:
        trees = _assemble(repo, Path(tmp), name, version, source, steps)
        components = {role: {"model": pl.component_name(name, role), "version": version, "files": _hashes(tree / str(version))}
                      for role, tree in trees.items()}
        ensemble = pl.ensemble_config(name, signature, {r: (steps.get(r) or source.signature, version) for r in trees})
        version_dir = Path(tmp) / name / str(version)
        version_dir.mkdir(parents=True)
        if reference is not None:
            shutil.copyfile(reference.path, version_dir / REFERENCE)
            metadata = {**(metadata or {}), "evaluation": reference.evaluation}
        (version_dir / ENSEMBLE_FILE).write_text(model_config.to_pbtxt(ensemble))
        manifest = Manifest(
            model=name, version=version, format="ensemble", files=_hashes(version_dir), signature=signature,
            created_at=utc_now(), provenance={**current_actor(), "git_commit": git_commit()}, parity=source.parity,
            metadata={**(metadata or {}), "pipeline": {
                "components": components,
                "source_model": {"model": model, "version": model_version, "format": source.format,
                                 "manifest_sha256": sha256_bytes(repo.store.read_bytes(f"{model}/{model_version}/{MANIFEST}"))},
            }},
        )
        (version_dir / MANIFEST).write_text(manifest.to_json())
        if sign_key is not None:  # signed before anything is written: a key that fails leaves the repository as it was
            from controlplane.security.signing import sign_folder

            sign_folder(version_dir, sign_key, sign_password)
        for role, tree in trees.items():  # the components first, the ensemble (the version itself) last
            _put(repo, components[role]["model"], version, tree)
        _put(repo, name, version, version_dir.parent, config=ensemble)
    return manifest


def _next_version(repo: Repository, name: str, roles) -> int:
    """One past every number used by the pipeline or any of its components (a crashed publish's leftovers too)."""
    used = [0]
    for key in [name, *(pl.component_name(name, r) for r in roles)]:
        used += [int(c) for c in repo.store.list_dir(key) + repo.store.claimed(key) if c.isdigit()]
    return max(used) + 1


def _assemble(repo: Repository, root: Path, name: str, version: int, source: Manifest, steps: dict) -> dict[str, Path]:
    trees = {}
    for role in (pl.PRE, pl.MODEL, pl.POST):
        if role != pl.MODEL and role not in steps:
            continue
        tree = root / pl.component_name(name, role)
        version_dir = tree / str(version)
        version_dir.mkdir(parents=True)
        comp = pl.component_name(name, role)
        if role == pl.MODEL:
            filename = FILENAMES[source.format]
            (version_dir / filename).write_bytes(repo.store.read_bytes(f"{source.model}/{source.version}/{filename}"))
            config = model_config.build_config(comp, source.format, source.signature,
                                               ServingOptions(version_policy=VersionPolicy("specific", (version,))))
        else:
            shutil.copyfile(pl.BACKEND_SOURCE, version_dir / pl.BACKEND_FILE)
            shutil.copyfile(steps[role].path, version_dir / pl.STEP_FILE)
            config = pl.step_config(comp, steps[role], source.signature.max_batch_size, version)
        (tree / CONFIG).write_text(model_config.to_pbtxt(config))
        trees[role] = tree
    return trees


def _put(repo: Repository, key: str, version: int, tree: Path, config=None) -> None:
    """The version folder (create-only), then the config that serves it."""
    config_text = (tree / CONFIG).read_text() if config is None else model_config.to_pbtxt(config)
    try:
        repo.store.put_tree(tree / str(version), f"{key}/{version}")
    except ConflictError as exc:
        raise ConflictError(f"{key}/{version} appeared while publishing (a concurrent publish?)",
                            hint="run the publish again: it takes the next number") from exc
    repo.store.write_bytes(f"{key}/{CONFIG}", config_text.encode())


def _hashes(version_dir: Path) -> dict[str, dict]:
    return {str(p.relative_to(version_dir)): {"sha256": sha256_file(p), "size": p.stat().st_size}
            for p in sorted(version_dir.rglob("*")) if p.is_file()}


def verify_pipeline(repo: Repository, name: str, version: int) -> list[str]:
    """Problems found comparing every component's files (and the ensemble's) with the pipeline's manifest."""
    manifest = repo.manifest(name, version)
    return [f"{name}: {p}" for p in repo.verify(name, version)] + component_problems(repo, manifest)


def component_problems(repo: Repository, manifest: Manifest) -> list[str]:
    """Problems found comparing every component's files with a pipeline's manifest ([] for a model's manifest)."""
    problems: list[str] = []
    if manifest.format != "ensemble":
        return problems
    for comp in manifest.metadata.get("pipeline", {}).get("components", {}).values():
        prefix = f"{comp['model']}/{comp['version']}"
        present = set(repo.store.list_files(prefix))
        for rel, expected in sorted(comp["files"].items()):
            if rel not in present:
                problems.append(f"{prefix}/{rel}: missing")
            elif sha256_bytes(repo.store.read_bytes(f"{prefix}/{rel}")) != expected["sha256"]:
                problems.append(f"{prefix}/{rel}: sha256 differs from the pipeline manifest")
        # Python's byte-code cache, which Triton's Python backend writes beside a step when it imports it, is no change
        extra = sorted(rel for rel in present - set(comp["files"]) if "__pycache__/" not in rel)
        problems += [f"{prefix}/{rel}: not in the pipeline manifest" for rel in extra]
    return problems
