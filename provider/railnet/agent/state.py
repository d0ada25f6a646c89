"""The agent's state directory: stored documents and each environment's identity.

Layout::

    STATE/environments/<env_id>/document.json   the last accepted document
    STATE/environments/<env_id>/identity.json   {"listen_port": N}
    STATE/environments/<env_id>/private.key     the WireGuard private key, mode 0600

A node that only keeps an environment's document (a keeper that hosts none of it) has the
document and neither of the other two files.

Every write is atomic (temporary file, fsync, rename), so a crash leaves the old or the
new version, never half of one. The private key never leaves this directory.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from railnet.core.document import EnvironmentDocument
from railnet.core.errors import DamagedState, InvalidField
from railnet.linux.files import write_atomic


@dataclass(frozen=True)
class Identity:
    """What makes an environment's WireGuard device the same across restarts."""

    private_key: str
    listen_port: int


class StateDir:
    def __init__(self, root: Path) -> None:
        self.root = root
        # Only this agent writes its state directory, so parsed documents are cached.
        self._documents: dict[str, EnvironmentDocument] = {}
        (root / "environments").mkdir(parents=True, exist_ok=True)
        os.chmod(root, 0o700)

    def _env(self, env_id: str) -> Path:
        return self.root / "environments" / env_id

    def environment_ids(self) -> list[str]:
        base = self.root / "environments"
        return sorted(p.name for p in base.iterdir() if (p / "identity.json").exists())

    def identity(self, env_id: str) -> Identity | None:
        directory = self._env(env_id)
        try:
            meta = json.loads((directory / "identity.json").read_text())
            key = (directory / "private.key").read_text().strip()
        except FileNotFoundError:
            return None
        except (ValueError, OSError) as exc:
            raise DamagedState(env_id, str(directory / "identity.json"), str(exc)) from None
        return Identity(private_key=key, listen_port=int(meta["listen_port"]))

    def save_identity(self, env_id: str, identity: Identity) -> None:
        directory = self._env(env_id)
        write_atomic(directory / "private.key", identity.private_key.encode() + b"\n", 0o600)
        write_atomic(
            directory / "identity.json",
            json.dumps({"listen_port": identity.listen_port}).encode(),
        )

    def document(self, env_id: str) -> EnvironmentDocument | None:
        cached = self._documents.get(env_id)
        if cached is not None:
            return cached
        path = self._env(env_id) / "document.json"
        try:
            doc = EnvironmentDocument.from_json(path.read_bytes())
        except FileNotFoundError:
            return None
        except (InvalidField, OSError) as exc:
            raise DamagedState(env_id, str(path), str(exc)) from None
        self._documents[env_id] = doc
        return doc

    def save_document(self, doc: EnvironmentDocument) -> None:
        path = self._env(doc.id) / "document.json"
        try:
            self.document(doc.id)
        except DamagedState:
            # The damaged file is kept beside the new one, for the operator to look at.
            shutil.copy2(path, path.with_name(f"document.json.damaged-{int(time.time())}"))
        write_atomic(path, doc.to_json().encode())
        self._documents[doc.id] = doc

    def forget_identity(self, env_id: str) -> None:
        """Drop the environment's key pair and port, keeping its document (the node keeps
        the document and hosts nothing)."""
        directory = self._env(env_id)
        (directory / "private.key").unlink(missing_ok=True)
        (directory / "identity.json").unlink(missing_ok=True)

    def forget(self, env_id: str) -> None:
        self._documents.pop(env_id, None)
        shutil.rmtree(self._env(env_id), ignore_errors=True)

    def used_ports(self) -> set[int]:
        ports = set()
        for env_id in self.environment_ids():
            identity = self.identity(env_id)
            if identity:
                ports.add(identity.listen_port)
        return ports
