"""config.pbtxt from a signature, with Triton's own protobuf (`model_config_pb2`) and `text_format`.

`build_config` is pure; reading and writing the file is the repository's job.
"""

from __future__ import annotations

from dataclasses import dataclass

from controlplane.errors import UsageError
from controlplane.model.signature import (
    Signature,
    TensorSpec,
    numpy_dtype_of_triton,
    triton_type,
)

PLATFORMS = {"onnx": "onnxruntime_onnx", "torchscript": "pytorch_libtorch"}
FILENAMES = {"onnx": "model.onnx", "torchscript": "model.pt"}


@dataclass(frozen=True)
class VersionPolicy:
    kind: str  # latest | all | specific
    values: tuple[int, ...] = ()

    @classmethod
    def parse(cls, text: str) -> VersionPolicy:
        kind, _, rest = text.strip().partition(":")
        try:
            values = tuple(int(v) for v in rest.split(",") if v.strip())
        except ValueError:
            values = ()
            kind = "invalid"
        if kind == "all" and not values:
            return cls("all")
        if kind == "latest" and len(values) == 1 and values[0] > 0:
            return cls("latest", values)
        if kind == "specific" and values and all(v > 0 for v in values):
            return cls("specific", tuple(sorted(set(values))))
        raise UsageError(
            f"version policy {text!r} is not understood", hint="use 'latest:N', 'all' or 'specific:1,2'"
        )

    def __str__(self) -> str:
        return self.kind if self.kind == "all" else f"{self.kind}:{','.join(map(str, self.values))}"


@dataclass(frozen=True)
class ServingOptions:
    dynamic_batching: bool = True
    max_queue_delay_us: int = 500
    instance_count: int = 1
    instance_kind: str = "cpu"  # cpu | gpu
    version_policy: VersionPolicy = VersionPolicy("latest", (1,))
    # a warm-up request runs before a version is READY, so a switch ends with a version that has answered
    warmup: bool = True
    # queue policy (dynamic batching only): beyond max_queue_size waiting requests Triton rejects at once
    # (0: unbounded); a request queued longer than queue_timeout_us is rejected (0: no time-out)
    max_queue_size: int = 0
    queue_timeout_us: int = 0

    def __post_init__(self) -> None:
        if self.max_queue_size < 0 or self.queue_timeout_us < 0:
            raise UsageError("max queue size and queue time-out must not be negative", hint="0 means unbounded")
        if (self.max_queue_size or self.queue_timeout_us) and not self.dynamic_batching:
            raise UsageError("a queue policy needs dynamic batching (Triton queues only there)",
                             hint="drop --max-queue-size/--queue-timeout-us or keep --dynamic-batching")
        if self.instance_kind not in ("cpu", "gpu"):
            raise UsageError(f"instance kind {self.instance_kind!r} must be 'cpu' or 'gpu'")
        if self.instance_count < 1:
            raise UsageError("instance count must be at least 1")
        if self.max_queue_delay_us < 0:
            raise UsageError("max queue delay must not be negative")


def _pb():
    from tritonclient.grpc import model_config_pb2

    return model_config_pb2


def build_config(name: str, model_format: str, signature: Signature, options: ServingOptions):
    """A ModelConfig proto for `name` in `model_format` (onnx | torchscript)."""
    pb = _pb()
    if model_format not in PLATFORMS:
        raise UsageError(f"format {model_format!r} is not one of {', '.join(PLATFORMS)}")
    config = pb.ModelConfig(
        name=name,
        platform=PLATFORMS[model_format],
        max_batch_size=signature.max_batch_size,
        default_model_filename=FILENAMES[model_format],
    )
    for spec, target in [(s, config.input) for s in signature.inputs] + [(s, config.output) for s in signature.outputs]:
        entry = target.add(name=spec.name, data_type=pb.DataType.Value(triton_type(spec.dtype)))
        if spec.dims or not signature.batched:
            entry.dims.extend(spec.dims)
        else:  # one value per sample: Triton wants dims [1] reshaped to a scalar
            entry.dims.append(1)
            entry.reshape.SetInParent()
    if signature.batched and options.dynamic_batching:
        config.dynamic_batching.max_queue_delay_microseconds = options.max_queue_delay_us
        apply_queue_policy(config, options.max_queue_size, options.queue_timeout_us)
    if options.warmup:
        add_warmup(config)
    group = config.instance_group.add(count=options.instance_count)
    group.kind = pb.ModelInstanceGroup.Kind.Value("KIND_GPU" if options.instance_kind == "gpu" else "KIND_CPU")
    apply_version_policy(config, options.version_policy)
    return config


def apply_queue_policy(config, max_queue_size: int, timeout_us: int) -> None:
    """Reject rather than queue without bound: Triton answers at once (UNAVAILABLE, 'Exceeds maximum queue size')."""
    if not (max_queue_size or timeout_us):
        return
    policy = config.dynamic_batching.default_queue_policy
    policy.max_queue_size = max_queue_size
    policy.default_timeout_microseconds = timeout_us
    policy.timeout_action = _pb().ModelQueuePolicy.TimeoutAction.Value("REJECT")


WARMUP_NAME = "mlctl-warmup"


def add_warmup(config) -> None:
    """One warm-up sample per instance, matching the signature: random floats (they exercise the real kernels),
    zeros for integer and boolean inputs (a random integer could be an out-of-vocabulary id the model refuses).
    Variable dims (-1) warm up at 1."""
    pb = _pb()
    config.ClearField("model_warmup")
    warmup = config.model_warmup.add(name=WARMUP_NAME, batch_size=1 if config.max_batch_size > 0 else 0)
    for entry in config.input:
        data = warmup.inputs[entry.name]
        data.data_type = entry.data_type
        data.dims.extend([1 if d == -1 else d for d in entry.dims])
        if pb.DataType.Name(entry.data_type) in ("TYPE_FP16", "TYPE_FP32", "TYPE_FP64"):
            data.random_data = True
        else:
            data.zero_data = True


WARMUP_FOLDER = "warmup"  # <model>/warmup/: Triton reads a warm-up sample's input_data_file from there


def reference_warmup_data(config, features) -> dict[str, bytes]:
    """The first row of a reference sample as the raw bytes of the model's one input, when it fits exactly
    (one input, fixed dims, the same number of values); {} otherwise (the warm-up stays random)."""
    import numpy as np

    if len(config.input) != 1 or len(features) == 0:
        return {}
    entry = config.input[0]
    if any(d < 0 for d in entry.dims):
        return {}
    row = np.asarray(features[0]).reshape(-1)
    if row.size != int(np.prod(list(entry.dims), dtype=np.int64)):
        return {}
    dtype = numpy_dtype_of_triton(_pb().DataType.Name(entry.data_type))
    return {entry.name: np.ascontiguousarray(row.astype(dtype)).tobytes()}


def use_warmup_files(config, files: dict[str, str]) -> None:
    """Make mlctl's warm-up sample read these inputs from files under <model>/warmup/ (a version's reference row)."""
    for warmup in config.model_warmup:
        if warmup.name != WARMUP_NAME:
            continue
        for name, path in files.items():
            if name in warmup.inputs:
                warmup.inputs[name].input_data_file = path


def apply_version_policy(config, policy: VersionPolicy) -> None:
    config.ClearField("version_policy")
    if policy.kind == "all":
        config.version_policy.all.SetInParent()
    elif policy.kind == "latest":
        config.version_policy.latest.num_versions = policy.values[0]
    else:
        config.version_policy.specific.versions.extend(policy.values)


def version_policy_of(config) -> VersionPolicy:
    which = config.version_policy.WhichOneof("policy_choice")
    if which == "all":
        return VersionPolicy("all")
    if which == "specific":
        return VersionPolicy("specific", tuple(config.version_policy.specific.versions))
    if which == "latest":
        return VersionPolicy("latest", (config.version_policy.latest.num_versions,))
    return VersionPolicy("latest", (1,))  # Triton's default


def to_pbtxt(config) -> str:
    from google.protobuf import text_format

    return text_format.MessageToString(config)


def parse_pbtxt(text: str, where: str = "config.pbtxt"):
    from google.protobuf import text_format

    try:
        return text_format.Parse(text, _pb().ModelConfig())
    except text_format.ParseError as exc:
        raise UsageError(f"{where} is not a valid Triton model config: {exc}") from exc


def to_json(config) -> str:
    """The JSON form that Triton's load API takes as a config override."""
    from google.protobuf import json_format

    return json_format.MessageToJson(config, preserving_proto_field_name=True)


def signature_of(config, api: bool = False) -> Signature:
    """The model's signature; with `api`, the shapes clients send and receive (before any reshape)."""
    pb = _pb()

    def dims(entry) -> tuple[int, ...]:
        return tuple(entry.reshape.shape) if entry.HasField("reshape") and not api else tuple(entry.dims)

    def specs(entries) -> tuple[TensorSpec, ...]:
        return tuple(TensorSpec(e.name, numpy_dtype_of_triton(pb.DataType.Name(e.data_type)), dims(e)) for e in entries)

    return Signature(specs(config.input), specs(config.output), config.max_batch_size)


def format_of(config) -> str:
    if config.platform == "ensemble" or config.backend == "python":  # a pipeline and its steps (model/pipeline.py)
        return "ensemble" if config.platform == "ensemble" else "python"
    for fmt, platform in PLATFORMS.items():
        if config.platform == platform or config.backend == platform.split("_")[0]:
            return fmt
    raise UsageError(f"model {config.name!r}: platform {config.platform!r} is not managed by mlctl")
