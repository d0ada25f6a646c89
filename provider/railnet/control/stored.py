"""Environment documents in the control store: read, written and deleted in compared
transactions, so there is one lineage per environment whoever writes it.

Every write compares the header's revision with the one its writer read: of two writers,
one lands and the other is told (``DocumentConflict``) and reads again. A read is one
small get when nothing changed since this process last read or wrote the environment (the
header's revision says so), and the whole document only when someone else changed it.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

from railnet.core.document import EnvironmentDocument
from railnet.core.errors import RailnetError
from railnet.core.store_keys import DOCUMENTS_HERE, environment_prefix
from railnet.core.stored_document import HEADER, assemble, part_writes
from railnet.store.etcd import Compare, Delete, EtcdStore, Put


class DocumentConflict(RailnetError):
    """Another writer changed the environment in the store since it was read."""

    def __init__(self, env_id: str) -> None:
        self.env_id = env_id
        super().__init__(
            f"environment {env_id}: another writer changed it in the control store since it "
            "was read; read it again and retry"
        )


@dataclass(frozen=True)
class Stored:
    """What the store holds of one environment."""

    revision: int
    """The header's ``mod_revision``: what a write compares; 0 when there is none."""
    document: EnvironmentDocument | None


class StoredDocuments:
    def __init__(self, store: EtcdStore) -> None:
        self.store = store
        self._known: dict[str, Stored] = {}
        self._lock = threading.Lock()

    def documents_here(self) -> bool:
        """Whether the documents live in the store: then a document that only nodes hold
        is a leftover, never the environment."""
        return self.store.get(DOCUMENTS_HERE)[1] is not None

    def mark_documents_here(self) -> None:
        self.store.put(DOCUMENTS_HERE, b"1")

    def read(self, env_id: str) -> Stored:
        prefix = environment_prefix(env_id)
        _, header = self.store.get(prefix + HEADER)
        if header is None:
            found = Stored(0, None)
        else:
            with self._lock:
                known = self._known.get(env_id)
            if known is not None and known.revision == header.mod_revision:
                return known
            _, entries = self.store.list(prefix)
            parts = {e.key.removeprefix(prefix): e.value for e in entries}
            head = parts.get(HEADER)
            if head is None:  # deleted between the two reads: read again
                return self.read(env_id)
            mod = next(e.mod_revision for e in entries if e.key == prefix + HEADER)
            found = Stored(mod, assemble(parts, where=f"store {prefix}"))
        with self._lock:
            self._known[env_id] = found
        return found

    def write(self, env_id: str, base: Stored, doc: EnvironmentDocument) -> Stored:
        """Make the stored document ``doc``, if it is still ``base``; returns what it is
        now. Writes the header and the services that differ."""
        prefix = environment_prefix(env_id)
        writes, deletes = part_writes(base.document, doc)
        done = self.store.commit(
            [Compare(prefix + HEADER, base.revision)],
            [Put(prefix + k, v.encode()) for k, v in writes.items()]
            + [Delete(prefix + k) for k in deletes],
        )
        if not done.succeeded:
            raise DocumentConflict(env_id)
        stored = Stored(done.revision, doc)
        with self._lock:
            self._known[env_id] = stored
        return stored

    def delete(self, env_id: str, base: Stored) -> None:
        """Remove the stored document, if it is still ``base``."""
        prefix = environment_prefix(env_id)
        done = self.store.commit(
            [Compare(prefix + HEADER, base.revision)], [Delete(prefix, prefix=True)]
        )
        if not done.succeeded:
            raise DocumentConflict(env_id)
        with self._lock:
            self._known[env_id] = Stored(0, None)
