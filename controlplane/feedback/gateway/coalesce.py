"""Requests that reach Triton together go as one: the gateway's requests for one model, version and input layout
that are ready in the same turn of the event loop are sent as a single Triton request of all their rows, and
each gets its own rows of the answer back.

Only where Triton would merge them itself: the caller passes the most rows a group may hold, which is the model's
max batch size when its config enables dynamic batching (the batcher puts requests of different clients in one
execution anyway) and 0 otherwise. Requests with parameters of their own are never grouped. Nothing waits for
company: the first request of a group yields for one turn of the loop, and whatever joined by then goes with it,
so a lone request goes as it came, one loop turn later.

Each client's answer is the one it would have had alone (its rows of each output). Triton's own figures change:
a group counts as one request in its request counts (`nv_inference_request_success`) while its inference count
(rows) stays; and a group fails as a whole, as a batch Triton formed would. A request cancelled while its
group is on its way (the gateway stopping) loses only its own answer: the group's request runs as a task of its
own and answers the others.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from tritonclient.utils import InferenceServerException

from controlplane.feedback.gateway.v2 import Tensor

Send = Callable[[str, tuple[Tensor, ...], str], Awaitable[tuple[str, list[Tensor]]]]


class _Group:
    __slots__ = ("members", "rows")

    def __init__(self, rows: int) -> None:
        self.rows = rows
        self.members: list[tuple[tuple[Tensor, ...], int, asyncio.Future]] = []  # those after the first


class Coalescer:
    def __init__(self, send: Send) -> None:
        self.send = send  # one Triton request: (model, tensors, version) -> (version that answered, outputs)
        self._open: dict[tuple, _Group] = {}  # groups still taking requests, by model, version and layout
        self.by_model: dict[str, list[int]] = {}  # model -> [requests taken, Triton requests made], for /metrics
        self._sending: set[asyncio.Task] = set()  # groups on their way (a task needs a reference to finish)

    @property
    def requests(self) -> int:
        return sum(taken for taken, _ in self.by_model.values())

    @property
    def sent(self) -> int:
        return sum(sent for _, sent in self.by_model.values())

    async def infer(self, model: str, tensors: tuple[Tensor, ...], version: str, limit: int) -> tuple[str, list[Tensor]]:
        """(the version that answered, its outputs) for `tensors`, batched inputs of the same number of rows, sent
        with whatever else is ready for the same model, version and layout, up to `limit` rows together."""
        rows = tensors[0].shape[0]
        counts = self.by_model.get(model)
        if counts is None:
            counts = self.by_model[model] = [0, 0]
        counts[0] += 1
        key = (model, version, *((t.name, t.datatype, t.shape[1:]) for t in tensors))
        group = self._open.get(key)
        if group is not None and group.rows + rows <= limit:
            future = asyncio.get_running_loop().create_future()
            group.members.append((tensors, rows, future))
            group.rows += rows
            return await future
        group = self._open[key] = _Group(rows)  # a full group goes on its way; the next ones start another
        try:
            await asyncio.sleep(0)  # one turn of the loop: the requests ready in it join
        except asyncio.CancelledError:
            if group.members:  # the others still go, without this request's rows
                counts[1] += 1
                self._launch(model, version, group, None)
            raise
        finally:
            if self._open.get(key) is group:
                del self._open[key]
        counts[1] += 1
        if not group.members:
            return await self.send(model, tensors, version)
        # the group's request runs as its own task: a cancelled first request loses only its own answer
        return await asyncio.shield(self._launch(model, version, group, (tensors, rows)))

    def _launch(self, model: str, version: str, group: _Group, first: tuple[tuple[Tensor, ...], int] | None) -> asyncio.Task:
        task = asyncio.ensure_future(self._send_group(model, version, group, first))
        self._sending.add(task)
        task.add_done_callback(_forget(self._sending))
        return task

    async def _send_group(self, model: str, version: str, group: _Group,
                          first: tuple[tuple[Tensor, ...], int] | None) -> tuple[str, list[Tensor]] | None:
        """Send the group, answer its members; the first request's own part (None without it)."""
        requests = ([first] if first else []) + [(tensors, rows) for tensors, rows, _ in group.members]
        try:
            answered, outputs = await self.send(model, _joined(requests), version)
            parts = _split(outputs, [rows for _, rows in requests])
        except BaseException as exc:
            for *_, future in group.members:
                if not future.done():
                    future.set_exception(exc)
            raise
        own = parts.pop(0) if first else None
        for (*_, future), part in zip(group.members, parts):
            if not future.done():
                future.set_result((answered, part))
        return None if own is None else (answered, own)


def _forget(tasks: set):
    def done(task: asyncio.Task) -> None:
        tasks.discard(task)
        if not task.cancelled():
            task.exception()  # retrieved: its members (and the first request, if still waiting) got it already
    return done


def _joined(requests: list[tuple[tuple[Tensor, ...], int]]) -> tuple[Tensor, ...]:
    """The requests' inputs as one, row after row: each input's bytes joined in the order of the requests (pure)."""
    total, first = sum(rows for _, rows in requests), requests[0][0]
    return tuple(Tensor(t.name, t.datatype, (total, *t.shape[1:]), b"".join(tensors[i].data for tensors, _ in requests))
                 for i, t in enumerate(first))


def _split(outputs: list[Tensor], counts: list[int]) -> list[list[Tensor]]:
    """Each request's rows of every output, in the order of `counts` (pure)."""
    total = sum(counts)
    parts: list[list[Tensor]] = [[] for _ in counts]
    for tensor in outputs:
        if tensor.datatype == "BYTES":  # variable-length elements: rows cannot be cut by byte counts
            raise InferenceServerException(f"output {tensor.name!r} is BYTES; such a model cannot be sent requests together",
                                           status="500")
        if not tensor.shape or tensor.shape[0] != total or len(tensor.data) % total:
            raise InferenceServerException(f"output {tensor.name!r} of shape {list(tensor.shape)} does not hold one row per "
                                           f"input row ({total} rows were sent together)", status="500")
        width, start = len(tensor.data) // total, 0
        for part, count in zip(parts, counts):
            part.append(Tensor(tensor.name, tensor.datatype, (count, *tensor.shape[1:]), tensor.data[start:start + count * width]))
            start += count * width
    return parts
