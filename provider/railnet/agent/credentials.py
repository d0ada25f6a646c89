"""The agent's TLS identity, reloadable without a restart, and the revocation list.

gRPC asks ``ServingCredentials`` for its certificate configuration on every new handshake;
after ``reload`` (on SIGHUP, or when a file changes) new connections get the new
certificate, key and trust bundle, while the process, its tunnels and its DNS carry on. The
revocation list (one certificate serial per line, hex, ``#`` comments) is checked on every
call by the role interceptor, so a revoked certificate is refused even on a connection that
was opened before it was revoked.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path

import grpc

from railnet.core.errors import RailnetError
from railnet.pki.certs import REVOKED_FILE, TlsFiles

log = logging.getLogger("railnet.agent")

__all__ = ["REVOKED_FILE", "ServingCredentials", "read_revoked"]


def read_revoked(path: Path | None) -> frozenset[int]:
    """The serials listed in ``path`` (missing file: none)."""
    if path is None or not path.exists():
        return frozenset()
    serials = set()
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        text = line.split("#", 1)[0].strip().lower().removeprefix("0x")
        if not text:
            continue
        try:
            serials.add(int(text, 16))
        except ValueError:
            raise RailnetError(
                f"{path}:{number}: {line.strip()!r} is not a certificate serial in hex"
            ) from None
    return frozenset(serials)


class ServingCredentials:
    """Server credentials that accept only clients of the cluster CA, and can be reloaded."""

    def __init__(self, files: TlsFiles, revoked: Path | None = None) -> None:
        self.files = files
        self.revoked_path = revoked
        self._lock = threading.Lock()
        self._config = self._load()
        self._version = 0
        self._revoked = read_revoked(revoked)
        self._stamp = self._mtimes()

    def _load(self) -> grpc.ServerCertificateConfiguration:
        ca, cert, key = self.files.load()
        return grpc.ssl_server_certificate_configuration([(key, cert)], root_certificates=ca)

    def _mtimes(self) -> tuple[float, ...]:
        paths = [self.files.ca, self.files.cert, self.files.key]
        if self.revoked_path is not None:
            paths.append(self.revoked_path)
        return tuple(p.stat().st_mtime_ns if p.exists() else 0 for p in paths)

    @property
    def revoked(self) -> frozenset[int]:
        return self._revoked

    def credentials(self) -> grpc.ServerCredentials:
        """Credentials for one listening port (gRPC wants one object per port); each asks
        for the current identity on new handshakes and takes it when it is newer."""
        seen = [self._version]

        def fetch() -> grpc.ServerCertificateConfiguration | None:
            with self._lock:
                if self._version == seen[0]:
                    return None
                seen[0] = self._version
                return self._config

        return grpc.dynamic_ssl_server_credentials(
            self._config, fetch, require_client_authentication=True
        )

    def reload(self) -> bool:
        """Read the files again. A file that does not load keeps the old identity in
        service (and is logged); returns whether the new one was taken."""
        try:
            config = self._load()
            revoked = read_revoked(self.revoked_path)
        except RailnetError as exc:
            log.error("TLS reload refused, keeping the current identity: %s", exc)
            return False
        with self._lock:
            self._config, self._revoked = config, revoked
            self._version += 1
            self._stamp = self._mtimes()
        log.info("TLS identity reloaded; %d revoked serial(s)", len(revoked))
        return True

    def reload_if_changed(self) -> bool:
        if self._mtimes() == self._stamp:
            return False
        return self.reload()
