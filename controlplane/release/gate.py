"""Promotion gates, evaluated against a live Triton serving the candidate:

- integrity: every file matches the manifest, and the export passed its parity check;
- accuracy: on a held-out set, from the served answers, at least production's accuracy minus a tolerance
  (and at least an absolute minimum, when set); with no labelled held-out set and the opt-in, the accuracy
  estimated from the served scores on the reference features, against the same floor (`estimated_accuracy`);
- latency: p99 under a short, bounded closed-loop load within a budget;
- errors: no failed request during that load.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from controlplane.errors import NotFoundError, UsageError
from controlplane.quality.reference import load_reference
from controlplane.settings import read_toml


@dataclass(frozen=True)
class GateThresholds:
    accuracy_tolerance: float = 0.01
    min_accuracy: float | None = None
    p99_ms: float = 100.0
    load_seconds: float = 5.0
    concurrency: int = 4
    max_error_rate: float = 0.0

    @classmethod
    def load(cls, path: str | None) -> GateThresholds:
        """Read and check a thresholds file before anything runs: a typo must not pass as the defaults."""
        if not path:
            return cls()
        return cls.from_document(read_toml(path, "gate thresholds file"), str(path))

    @classmethod
    def from_document(cls, document: dict, where: str) -> GateThresholds:
        """Thresholds from a parsed TOML document (pure); UsageError naming the table, key and expected type."""
        unknown_tables = sorted(set(document) - {"gate"})
        if unknown_tables:
            raise UsageError(f"gate thresholds file {where}: unknown table(s) {', '.join(unknown_tables)}",
                             hint="the thresholds go in one [gate] table")
        if "gate" not in document or not isinstance(document["gate"], dict):
            raise UsageError(f"gate thresholds file {where} has no [gate] table", hint=f"settings: {', '.join(_RULES)}")
        data = document["gate"]
        unknown = sorted(set(data) - set(_RULES))
        if unknown:
            raise UsageError(f"gate thresholds file {where}: unknown gate settings {', '.join(unknown)}", hint=f"known: {', '.join(sorted(_RULES))}")
        for key, value in data.items():
            kind, valid, expected = _RULES[key]
            if isinstance(value, bool) or not isinstance(value, kind) or not valid(value):
                raise UsageError(f"gate thresholds file {where}: [gate] {key} = {value!r} is not valid; expected {expected}")
        return cls(**{k: float(v) if _RULES[k][0] is not int else v for k, v in data.items()})


# key -> (accepted TOML types, check, what the user should write)
_RULES: dict[str, tuple[type | tuple[type, ...], object, str]] = {
    "accuracy_tolerance": ((int, float), lambda v: 0 <= v <= 1, "a number from 0 to 1"),
    "min_accuracy": ((int, float), lambda v: 0 <= v <= 1, "a number from 0 to 1"),
    "p99_ms": ((int, float), lambda v: v > 0, "a number of milliseconds above 0"),
    "load_seconds": ((int, float), lambda v: v > 0, "a number of seconds above 0"),
    "concurrency": (int, lambda v: v >= 1, "a whole number of at least 1"),
    "max_error_rate": ((int, float), lambda v: 0 <= v <= 1, "a number from 0 to 1"),
}


@dataclass(frozen=True)
class GateResult:
    gate: str
    passed: bool
    value: float | None
    threshold: float | None
    detail: str
    basis: str | None = None  # accuracy gates: "realised" (labels) or "estimated" (no labels: CBPE)
    band: tuple[float, float] | None = None  # an estimate's 95 % band


@dataclass
class Verdict:
    model: str
    version: int
    channel: str
    target: str
    gates: list[GateResult] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return all(g.passed for g in self.gates)

    def to_dict(self) -> dict:
        return {"model": self.model, "version": self.version, "channel": self.channel, "target": self.target,
                "passed": self.passed, "gates": [asdict(g) for g in self.gates]}


def load_holdout(path: Path) -> tuple[np.ndarray, np.ndarray]:
    try:
        with np.load(path, allow_pickle=False) as data:
            return data["features"], data["labels"]
    except (KeyError, ValueError, OSError) as exc:
        raise UsageError(f"held-out set {path} needs arrays 'features' and 'labels' ({exc})") from exc


def evaluate(repo, model: str, version: int, channel: str, target: str, thresholds: GateThresholds,
             holdout: Path | None = None, production_channel: str = "production", progress=None,
             estimate_missing_labels: bool = False) -> Verdict:
    """Run every gate (none stops the others) against the Triton at `target` (gRPC host:port). `progress`
    hears about each long step (the held-out pass, the load). `estimate_missing_labels`: with no labelled
    held-out set, judge the accuracy estimated from the served scores on the reference features instead of
    refusing (`gate_estimate.py`)."""
    say = progress or (lambda _msg: None)
    from controlplane.model import config as model_config
    from controlplane.triton.client import TritonClient

    manifest = repo.manifest(model, version)
    verdict = Verdict(model, version, channel, target)
    pipeline = manifest.format == "ensemble"  # judged end to end: raw inputs in, the post step's answer out
    problems = _integrity_problems(repo, model, version, pipeline)
    parity_ok = manifest.parity.get("passed") is not False
    verdict.gates.append(GateResult("integrity", not problems and parity_ok, None, None,
                                    "; ".join(problems) or ("parity passed" if parity_ok else "parity failed at export")))

    signature = manifest.signature if pipeline else model_config.signature_of(repo.config(model), api=True)
    production, baseline, baseline_accuracy = _baseline(repo, model, version, production_channel)
    features, labels, calibration = _held_out(repo, model, version, holdout, baseline, estimate_missing_labels)
    name = signature.inputs[0].name
    features = _shaped(features, signature.inputs[0])
    batch = max(signature.max_batch_size, 1)
    with TritonClient(target) as client:
        say(f"gate: {len(features)} {'reference' if labels is None else 'held-out'} rows through {target}")
        scores = []
        for start in range(0, len(features), batch):
            answer = client.infer(model, {name: features[start:start + batch]}, version=str(version))
            scores.append(np.asarray(next(iter(answer.outputs.values()))))
        scores = np.concatenate(scores)
        floor, basis = accuracy_floor(version, production, baseline, baseline_accuracy, thresholds)
        if labels is None:
            from controlplane.release.gate_estimate import estimated_gate

            verdict.gates.append(estimated_gate(scores, calibration, version, floor, basis))
        else:
            accuracy = float((predicted_labels(scores) == labels.reshape(-1)).mean())
            verdict.gates.append(GateResult("accuracy", floor is None or accuracy >= floor, accuracy, floor,
                                            f"{len(labels)} held-out samples served by v{version}; floor: {basis}", basis="realised"))
        say(f"gate: load at concurrency {thresholds.concurrency} for {thresholds.load_seconds:g} s (p99, error rate)")
        verdict.gates.extend(_load_gates(client, model, version, {name: features[:1]}, thresholds))
    return verdict


def predicted_labels(scores: np.ndarray) -> np.ndarray:
    """The answer per row: an integer output of one value per row (a pipeline's post step, e.g. the digit) is the
    label itself; scores (several columns) give their arg-max class (pure)."""
    if np.issubdtype(scores.dtype, np.integer) and scores.reshape(len(scores), -1).shape[1] == 1:
        return scores.reshape(-1)
    return np.argmax(scores, axis=1)


def _integrity_problems(repo, model: str, version: int, pipeline: bool) -> list[str]:
    if not pipeline:
        return repo.verify(model, version)
    from controlplane.store.pipelines import verify_pipeline

    return verify_pipeline(repo, model, version)  # the ensemble and every component against the pipeline's manifest


def _load_gates(client, model: str, version: int, inputs: dict, thresholds: GateThresholds) -> list[GateResult]:
    """p99 latency and error rate under the bounded load."""
    latencies, failures = _bounded_load(client, model, str(version), inputs, thresholds)
    p99 = float(np.percentile(latencies, 99)) * 1000 if latencies else None
    total = len(latencies) + failures
    error_rate = failures / total if total else None
    return [GateResult("p99_latency", p99 is not None and p99 <= thresholds.p99_ms, p99, thresholds.p99_ms,
                       f"{len(latencies)} requests at concurrency {thresholds.concurrency} for {thresholds.load_seconds} s"),
            GateResult("error_rate", error_rate is not None and error_rate <= thresholds.max_error_rate, error_rate,
                       thresholds.max_error_rate, f"{failures} failed of {total}")]


def _baseline(repo, model: str, version: int, production_channel: str) -> tuple[int | None, int | None, float | None]:
    """(production's version, the baseline: production's, or the one before it when the candidate is
    production's, and the baseline's evaluation accuracy)."""
    from controlplane.store.channel_store import ChannelStore

    state, _ = ChannelStore(repo.store).load(model)
    production = state.channels.get(production_channel)
    baseline = production
    if production == version:  # the candidate is production's version: judge it against the one before
        try:
            baseline = state.rollback_target(production_channel)
        except NotFoundError:
            baseline = None
    accuracy = repo.manifest(model, baseline).metadata.get("evaluation", {}).get("accuracy") if baseline is not None else None
    return production, baseline, accuracy


def _held_out(repo, model: str, version: int, holdout: Path | None, baseline: int | None, estimate: bool):
    """(features, labels, None) of the labelled held-out set; or, with no labels and `estimate`, (the
    reference's features, None, the calibration from the baseline's reference)."""
    if holdout is not None:
        return (*load_holdout(holdout), None)
    reference = load_reference(repo, model, version)
    if reference is not None and reference.labels is not None:
        return reference.features, reference.labels, None
    if not estimate:
        raise UsageError(f"no held-out set: pass --holdout, or publish {model!r} v{version} with a labelled --reference",
                         hint="or pass --estimate-missing-labels to judge the accuracy estimated from the served scores")
    from controlplane.release.gate_estimate import calibration

    if reference is None:
        raise UsageError(f"no held-out set and no reference sample to estimate on: {model!r} v{version} was published "
                         f"without --reference", hint="pass --holdout, or publish it with a --reference (labels optional)")
    return reference.features, None, calibration(repo, model, baseline)


def _shaped(features: np.ndarray, spec) -> np.ndarray:
    features = features.astype(spec.dtype)
    if -1 not in spec.dims:  # a reference stores rows flat; give them the input's per-sample shape
        try:
            return features.reshape((len(features), *spec.dims))
        except ValueError as exc:
            raise UsageError(f"held-out features of shape {list(features.shape)} do not fit input {spec.describe(True)}") from exc
    return features


def accuracy_floor(candidate: int, production: int | None, baseline: int | None, baseline_accuracy: float | None,
                   thresholds: GateThresholds) -> tuple[float | None, str]:
    """The accuracy the candidate must reach, and a sentence saying where it comes from (pure).
    `baseline` is production's version, or the one before it when the candidate is production's version."""
    if production is None:
        basis = "no production version yet"
    elif production == candidate and baseline is None:
        basis = f"v{candidate} is production's version and none came before it"
    elif production == candidate:
        basis = f"v{candidate} is production's version; compared with the version before it, v{baseline}"
    else:
        basis = f"production v{production}"
    floor = None
    if baseline is not None and baseline_accuracy is None:
        basis += f" (v{baseline} has no evaluation.accuracy in its manifest: no floor from it)"
    elif baseline is not None:
        floor = baseline_accuracy - thresholds.accuracy_tolerance
        basis += f": {baseline_accuracy:.4f} - {thresholds.accuracy_tolerance}"
    if thresholds.min_accuracy is not None:
        floor = max(floor if floor is not None else 0.0, thresholds.min_accuracy)
        basis += f"; minimum {thresholds.min_accuracy}"
    return floor, basis


def _bounded_load(client, model: str, version: str, inputs: dict, thresholds: GateThresholds) -> tuple[list[float], int]:
    from controlplane.triton.load import run_threads

    result = run_threads(lambda _i: lambda: client.infer(model, inputs, version=version).version,
                         thresholds.concurrency, thresholds.load_seconds)
    return result.latencies_s, result.failures
