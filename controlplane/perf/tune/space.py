"""The serving settings tune searches, as values (pure): a Candidate is one setting of instance kind and count,
dynamic batching on or off, max batch size, batching delay and preferred batch sizes; `apply_candidate` writes one
into a model config.

Instance kind: "" (the default space's only value) keeps the kind the model was published with, so a tune on a
CPU host searches what it always did. On a GPU target a space may hold "gpu" and "cpu" (a small model can serve
as well from CPU instances and leave the GPU to others), or "gpu" alone: a model sized for the GPU takes seconds
per request on CPU instances, so each CPU candidate would only spend the search's time to fail the budget."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace

from controlplane.errors import UsageError

PREFERRED = ("none", "max", "halves")  # no preferred sizes; [max]; [max/2, max]
KINDS = ("", "cpu", "gpu")  # "": as published


@dataclass(frozen=True)
class Candidate:
    instances: int = 1
    batching: bool = True
    max_batch_size: int = 8
    delay_us: int = 0
    preferred: str = "none"
    instance_kind: str = ""

    def canonical(self) -> Candidate:
        """Settings that make no difference are fixed: without dynamic batching, delay and preferred sizes do
        nothing (the max batch size stays: it bounds a request's rows)."""
        return replace(self, delay_us=0, preferred="none") if not self.batching else self

    def preferred_sizes(self) -> tuple[int, ...]:
        if not self.batching or self.preferred == "none":
            return ()
        return (self.max_batch_size,) if self.preferred == "max" else tuple(sorted({max(1, self.max_batch_size // 2), self.max_batch_size}))

    def label(self) -> str:
        instances = f"inst {self.instances}{f' {self.instance_kind}' if self.instance_kind else ''}"
        if not self.batching:
            return f"{instances}, batching off, max {self.max_batch_size}"
        sizes = ",".join(map(str, self.preferred_sizes())) or "-"
        return f"{instances}, max {self.max_batch_size}, delay {self.delay_us} us, pref {sizes}"

    def to_dict(self) -> dict:
        return {**asdict(self), "preferred_batch_sizes": list(self.preferred_sizes())}

    @classmethod
    def from_dict(cls, data: dict) -> Candidate:
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})


@dataclass(frozen=True)
class Space:
    instances: tuple[int, ...] = (1, 2)
    batching: tuple[bool, ...] = (True, False)
    max_batch_size: tuple[int, ...] = (8, 32, 64)
    delay_us: tuple[int, ...] = (0, 200, 1000, 4000)
    preferred: tuple[str, ...] = ("none", "halves")
    instance_kind: tuple[str, ...] = ("",)

    DIMENSIONS = ("batching", "instance_kind", "instances", "max_batch_size", "delay_us", "preferred")
    # what the halving search's screen leaves at the first value and refines around the best afterwards: preferred
    # sizes only shape the batches the delay and max batch size already allow
    FINE = ("preferred",)

    def __post_init__(self) -> None:
        if not all(getattr(self, d) for d in self.DIMENSIONS):
            raise UsageError("every dimension of the tune space needs at least one value")
        if min(self.instances) < 1 or min(self.max_batch_size) < 1 or min(self.delay_us) < 0:
            raise UsageError("instances and max batch sizes must be at least 1, delays not negative")
        unknown = set(self.preferred) - set(PREFERRED)
        if unknown:
            raise UsageError(f"preferred batch sizes {sorted(unknown)} are not among {', '.join(PREFERRED)}")
        if set(self.instance_kind) - set(KINDS):
            raise UsageError(f"instance kinds {sorted(set(self.instance_kind) - set(KINDS))} are not among cpu, gpu")

    def capped(self, model_max_batch: int) -> Space:
        """Max batch sizes within the model's own (its published contract); the model's own when none fits."""
        sizes = tuple(s for s in self.max_batch_size if s <= model_max_batch) or (model_max_batch,)
        return replace(self, max_batch_size=sizes)

    def grid(self) -> list[Candidate]:
        """Every distinct candidate (settings that make no difference counted once)."""
        seen: dict[Candidate, None] = {}
        for b in self.batching:
            for k in self.instance_kind:
                for i in self.instances:
                    for m in self.max_batch_size:
                        for d in self.delay_us:
                            for p in self.preferred:
                                seen.setdefault(Candidate(i, b, m, d, p, k).canonical())
        return list(seen)

    def coarse(self) -> list[Candidate]:
        """The halving search's screen: every combination of the dimensions that change how requests are served
        (batching, kind, instances, max batch size, delay), the FINE ones at their first value. Without batching the
        max batch size only bounds a request's rows, so batching off is screened once per kind and instance count,
        at the largest."""
        fine = {d: getattr(self, d)[0] for d in self.FINE}
        return [c for c in self.grid() if all(getattr(c, d) == v for d, v in fine.items() if c.batching)
                and (c.batching or c.max_batch_size == max(self.max_batch_size))]

    def start(self) -> Candidate:
        """Where a coordinate search begins: the first batching value and instance kind, one instance, the middle
        batch size, the smallest delay, no preferred sizes."""
        return Candidate(min(self.instances), self.batching[0], sorted(self.max_batch_size)[len(self.max_batch_size) // 2],
                         min(self.delay_us), self.preferred[0], self.instance_kind[0]).canonical()

    def within(self, candidate: Candidate) -> Candidate:
        """The candidate with any setting outside the space (a delay of 0 kept from batching off) set to the
        space's first value, canonical."""
        if candidate.batching and candidate.delay_us not in self.delay_us:
            candidate = replace(candidate, delay_us=min(self.delay_us))
        if candidate.batching and candidate.preferred not in self.preferred:
            candidate = replace(candidate, preferred=self.preferred[0])
        return candidate.canonical()

    def along(self, candidate: Candidate, dimension: str) -> list[Candidate]:
        """The candidates that differ from `candidate` in `dimension` only (canonical, without itself)."""
        others = [self.within(replace(candidate, **{dimension: v})) for v in getattr(self, dimension)]
        return [c for c in dict.fromkeys(others) if c != candidate.canonical()]


def apply_candidate(base, candidate: Candidate):
    """A copy of the model config `base` with the candidate's settings."""
    config = type(base)()
    config.CopyFrom(base)
    if base.max_batch_size <= 0:
        raise UsageError(f"model {base.name!r} takes no batch dimension: there is no batching to tune")
    config.max_batch_size = candidate.max_batch_size
    if candidate.batching:
        queue_policy = type(config.dynamic_batching.default_queue_policy)()
        if config.HasField("dynamic_batching"):
            queue_policy.CopyFrom(config.dynamic_batching.default_queue_policy)
        config.ClearField("dynamic_batching")
        config.dynamic_batching.max_queue_delay_microseconds = candidate.delay_us
        config.dynamic_batching.preferred_batch_size.extend(candidate.preferred_sizes())
        if queue_policy.ByteSize():
            config.dynamic_batching.default_queue_policy.CopyFrom(queue_policy)
    else:
        config.ClearField("dynamic_batching")
    if not config.instance_group:
        config.instance_group.add()
    del config.instance_group[1:]
    config.instance_group[0].count = candidate.instances
    if candidate.instance_kind:
        group = config.instance_group[0]
        group.kind = type(group).Kind.Value(f"KIND_{candidate.instance_kind.upper()}")
        if candidate.instance_kind == "cpu":
            group.ClearField("gpus")
    return config


def candidate_of(config) -> Candidate:
    """The settings a model config has now (the baseline a tune compares against; its instance kind is "", as
    published)."""
    batching = config.HasField("dynamic_batching")
    sizes = tuple(config.dynamic_batching.preferred_batch_size) if batching else ()
    preferred = "none" if not sizes else ("max" if sizes == (config.max_batch_size,) else "halves")
    count = config.instance_group[0].count if config.instance_group else 1
    return Candidate(max(1, count), batching, config.max_batch_size, config.dynamic_batching.max_queue_delay_microseconds if batching else 0,
                     preferred).canonical()
