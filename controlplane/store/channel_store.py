"""Where channel state documents live in the repository: `.mlctl/channels/<model>.json`, read and written with
compare-and-swap (a DocumentStore)."""

from __future__ import annotations

from controlplane.store import Store
from controlplane.store.channels import ModelState
from controlplane.store.documents import DocumentStore

STATE_PREFIX = ".mlctl/channels"


class ChannelStore:
    def __init__(self, store: Store) -> None:
        self.store = store
        self.documents = DocumentStore(store, STATE_PREFIX, parse=ModelState.from_json, dump=ModelState.to_json,
                                       name_of=lambda state: state.model)

    def key(self, model: str) -> str:
        return self.documents.key(model)

    def load(self, model: str) -> tuple[ModelState, str | None]:
        """The model's state and its token (None while the model has never been promoted)."""
        state, token = self.documents.load(model)
        return (state if state is not None else ModelState(model=model)), token

    def save(self, state: ModelState, token: str | None) -> str:
        """Write only if nobody wrote since `token` was read (ConflictError otherwise)."""
        return self.documents.save(state, token)

    def models(self) -> list[str]:
        return self.documents.names()
