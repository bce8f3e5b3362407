"""Where channel state documents live in the repository, read and written with compare-and-swap."""

from __future__ import annotations

from controlplane.store import Store
from controlplane.store.channels import ModelState

STATE_PREFIX = ".mlctl/channels"


class ChannelStore:
    def __init__(self, store: Store) -> None:
        self.store = store

    def key(self, model: str) -> str:
        return f"{STATE_PREFIX}/{model}.json"

    def load(self, model: str) -> tuple[ModelState, str | None]:
        """The model's state and its token (None while the model has never been promoted)."""
        data, token = self.store.read_versioned(self.key(model))
        if data is None:
            return ModelState(model=model), None
        return ModelState.from_json(data, f"{self.store.uri}/{self.key(model)}"), token

    def save(self, state: ModelState, token: str | None) -> str:
        """Write only if nobody wrote since `token` was read (ConflictError otherwise)."""
        return self.store.write_if(self.key(state.model), state.to_json().encode(), token)

    def models(self) -> list[str]:
        return sorted(n[: -len(".json")] for n in self.store.list_dir(STATE_PREFIX) if n.endswith(".json"))
