"""State documents kept in the repository: one JSON document per name under a prefix, changed only by
compare-and-swap, so two writers never lose each other's change silently.

    <repo>/<prefix>/<name>.json

The channel state (`.mlctl/channels`) and the canary state (`.mlctl/canary`) are two uses of this one class;
each brings its own parse and dump.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Generic, TypeVar

from controlplane.store.base import Store

Document = TypeVar("Document")
SUFFIX = ".json"


class DocumentStore(Generic[Document]):
    """`parse(data, where)` turns stored bytes into a document (raising an MlctlError that names `where` when
    they are not one); `dump(document)` turns it back into text; `name_of(document)` says which key it has."""

    def __init__(self, store: Store, prefix: str, *, parse: Callable[[bytes, str], Document],
                 dump: Callable[[Document], str], name_of: Callable[[Document], str]) -> None:
        self.store = store
        self.prefix = prefix.rstrip("/")
        self._parse, self._dump, self._name_of = parse, dump, name_of

    def key(self, name: str) -> str:
        return f"{self.prefix}/{name}{SUFFIX}"

    def load(self, name: str) -> tuple[Document | None, str | None]:
        """The document and a token naming this exact content; (None, None) when there is none."""
        data, token = self.store.read_versioned(self.key(name))
        if data is None:
            return None, None
        return self._parse(data, f"{self.store.uri}/{self.key(name)}"), token

    def save(self, document: Document, token: str | None) -> str:
        """Write only if the stored document is still the one `token` names (None: only if there is none);
        ConflictError when someone else wrote first. Returns the new token."""
        return self.store.write_if(self.key(self._name_of(document)), self._dump(document).encode(), token)

    def names(self) -> list[str]:
        """The names that have a document, sorted."""
        return sorted(n[: -len(SUFFIX)] for n in self.store.list_dir(self.prefix) if n.endswith(SUFFIX))
