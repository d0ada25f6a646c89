"""The agent's state directory: stored documents and each environment's identity.

Layout::

    STATE/environments/<env_id>/document.json   the last accepted document
    STATE/environments/<env_id>/identity.json   {"listen_port": N, "rotation": TOKEN,
                                                 "staged_rotation": TOKEN}
    STATE/environments/<env_id>/private.key     the WireGuard private key, mode 0600
    STATE/environments/<env_id>/staged.key      the next private key, during a rotation

A node that only keeps an environment's document (a keeper that hosts none of it) has the
document and neither of the other two files.

Every write is atomic (temporary file, fsync, rename), so a crash leaves the old or the
new version, never half of one. The private keys never leave this directory.

A rotation stages a key (``staged.key`` first, then its token in ``identity.json``) and
promotes it by renaming ``staged.key`` over ``private.key``: one rename puts the new key in
service and takes the old one off the disk. Only a promotion removes ``staged.key`` while
``identity.json`` still names a staged token (a discard forgets the token first), so that
state, left by a crash between the rename and the rewrite of ``identity.json``, reads as the
promotion done.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from railnet.core.document import EnvironmentDocument
from railnet.core.errors import DamagedState, InvalidField, RailnetError
from railnet.linux.files import fsync_directory, write_atomic


@dataclass(frozen=True)
class Identity:
    """What makes an environment's WireGuard device the same across restarts."""

    private_key: str
    listen_port: int
    rotation: str = ""
    """The key rotation token ``private_key`` was made for."""


@dataclass(frozen=True)
class StagedKey:
    """The next private key of a rotation, not yet in service."""

    private_key: str
    rotation: str
    """The token it was made for."""


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

    def document_ids(self) -> list[str]:
        """Every environment with a stored document: hosted here, or only kept."""
        base = self.root / "environments"
        return sorted(p.name for p in base.iterdir() if (p / "document.json").exists())

    def _meta(self, env_id: str) -> dict[str, object] | None:
        path = self._env(env_id) / "identity.json"
        try:
            meta = json.loads(path.read_text())
        except FileNotFoundError:
            return None
        except (ValueError, OSError) as exc:
            raise DamagedState(env_id, str(path), str(exc)) from None
        if not isinstance(meta, dict) or not isinstance(meta.get("listen_port"), int):
            raise DamagedState(env_id, str(path), "no listen_port")
        return meta

    def _write_meta(self, env_id: str, meta: dict[str, object]) -> None:
        write_atomic(self._env(env_id) / "identity.json", json.dumps(meta, sort_keys=True).encode())

    def identity(self, env_id: str) -> Identity | None:
        directory = self._env(env_id)
        meta = self._meta(env_id)
        try:
            key = (directory / "private.key").read_text().strip()
        except FileNotFoundError:
            return None
        if meta is None:
            return None
        rotation = str(meta.get("rotation", ""))
        staged = meta.get("staged_rotation")
        if staged is not None and not (directory / "staged.key").exists():
            rotation = str(staged)  # a promotion cut short after its rename: it is done
        return Identity(
            private_key=key, listen_port=int(str(meta["listen_port"])), rotation=rotation
        )

    def save_identity(self, env_id: str, identity: Identity) -> None:
        directory = self._env(env_id)
        write_atomic(directory / "private.key", identity.private_key.encode() + b"\n", 0o600)
        meta: dict[str, object] = {"listen_port": identity.listen_port}
        if identity.rotation:
            meta["rotation"] = identity.rotation
        self._write_meta(env_id, meta)

    def staged(self, env_id: str) -> StagedKey | None:
        meta = self._meta(env_id)
        if meta is None or meta.get("staged_rotation") is None:
            return None
        try:
            key = (self._env(env_id) / "staged.key").read_text().strip()
        except FileNotFoundError:
            return None
        return StagedKey(private_key=key, rotation=str(meta["staged_rotation"]))

    def stage_key(self, env_id: str, staged: StagedKey) -> None:
        meta = self._meta(env_id)
        if meta is None:
            raise RailnetError(f"environment {env_id} has no identity to rotate")
        if meta.get("staged_rotation") is not None:
            self.discard_staged(env_id)
            meta.pop("staged_rotation")
        write_atomic(self._env(env_id) / "staged.key", staged.private_key.encode() + b"\n", 0o600)
        self._write_meta(env_id, {**meta, "staged_rotation": staged.rotation})

    def discard_staged(self, env_id: str) -> None:
        """Forget an unused staged key: its token first, then the key file."""
        meta = self._meta(env_id)
        if meta is not None and meta.pop("staged_rotation", None) is not None:
            self._write_meta(env_id, meta)
        (self._env(env_id) / "staged.key").unlink(missing_ok=True)

    def promote_staged(self, env_id: str) -> Identity:
        """Put the staged key in service; the old private key is gone from the disk."""
        directory = self._env(env_id)
        staged, meta = self.staged(env_id), self._meta(env_id)
        if staged is None or meta is None:
            raise RailnetError(f"environment {env_id} has no staged key to put in service")
        os.replace(directory / "staged.key", directory / "private.key")
        fsync_directory(directory)
        meta.pop("staged_rotation", None)
        meta["rotation"] = staged.rotation
        self._write_meta(env_id, meta)
        return Identity(staged.private_key, int(str(meta["listen_port"])), staged.rotation)

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

    def held_versions(self) -> dict[str, tuple[int, str]]:
        """Per stored document, its generation and digest (what the node reports to the
        control store); a damaged one is left out, as ``railnet status`` reports it."""
        found = {}
        for env_id in self.document_ids():
            try:
                doc = self.document(env_id)
            except DamagedState:
                continue
            if doc is not None:
                found[env_id] = (doc.generation, doc.digest)
        return found

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
        (directory / "staged.key").unlink(missing_ok=True)
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
