"""The one state-document store (compare-and-swap per name under a prefix), on local disk and on a real
S3-compatible server; the channel and canary states are two uses of it."""

from __future__ import annotations

import json
from dataclasses import dataclass

import pytest
from support import new_s3_uri

from controlplane.errors import ConflictError, UsageError
from controlplane.release.canary import CanaryPolicy, CanaryState, CanaryStore
from controlplane.store import open_store
from controlplane.store.channel_store import ChannelStore
from controlplane.store.channels import ModelState
from controlplane.store.documents import DocumentStore


@dataclass(frozen=True)
class Note:
    name: str
    text: str


def notes(store) -> DocumentStore[Note]:
    def parse(data: bytes, where: str) -> Note:
        try:
            return Note(**json.loads(data))
        except (ValueError, TypeError) as exc:
            raise UsageError(f"{where} is not a note") from exc

    return DocumentStore(store, ".mlctl/notes", parse=parse, dump=lambda n: json.dumps(n.__dict__),
                         name_of=lambda n: n.name)


def check_compare_and_swap(store) -> None:
    docs = notes(store)
    assert docs.load("a") == (None, None) and docs.names() == []
    token = docs.save(Note("a", "one"), None)
    with pytest.raises(ConflictError):
        docs.save(Note("a", "created twice"), None)  # None: only if there is none
    loaded, same = docs.load("a")
    assert loaded == Note("a", "one") and same == token
    newer = docs.save(Note("a", "two"), token)
    with pytest.raises(ConflictError):
        docs.save(Note("a", "from a stale read"), token)  # someone wrote since `token` was read
    assert docs.load("a") == (Note("a", "two"), newer)
    docs.save(Note("b", "x"), None)
    assert docs.names() == ["a", "b"] and docs.key("a") == ".mlctl/notes/a.json"
    store.write_bytes(docs.key("c"), b"not json")
    with pytest.raises(UsageError, match=r"notes/c\.json is not a note"):
        docs.load("c")


def test_document_store_on_local_disk(tmp_path):
    check_compare_and_swap(open_store(str(tmp_path)))


def test_document_store_on_s3(s3_env):
    check_compare_and_swap(open_store(new_s3_uri()))


def test_channel_and_canary_states_are_documents_of_the_one_store(tmp_path):
    store = open_store(str(tmp_path))
    channels = ChannelStore(store)
    assert channels.load("m") == (ModelState(model="m"), None)  # never promoted: an empty state, no token
    token = channels.save(ModelState(model="m", channels={"production": 1}), None)
    with pytest.raises(ConflictError):
        channels.save(ModelState(model="m", channels={"production": 2}), None)
    assert channels.load("m")[1] == token and channels.models() == ["m"]
    assert channels.key("m") == ".mlctl/channels/m.json"

    canaries = CanaryStore(store)
    assert isinstance(canaries, DocumentStore) and canaries.load("m") == (None, None)
    state = CanaryState.begin("m", "production", 1, 2, (10.0, 100.0), 0.0, CanaryPolicy(), allow_unlabelled=True)
    canary_token = canaries.save(state, None)
    assert canaries.load("m") == (state, canary_token) and canaries.names() == ["m"]
    assert (tmp_path / ".mlctl" / "canary" / "m.json").is_file()
    store.write_bytes(".mlctl/canary/m.json", b"{}")
    with pytest.raises(UsageError, match="not a valid mlctl canary state"):
        canaries.load("m")
