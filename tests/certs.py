"""Certificates tests need beyond what ``railnet certs`` mints."""

from __future__ import annotations

from pathlib import Path

from railnet.pki.certs import TlsFiles, mint_certificate


def roleless_client(ca_cert: Path, ca_key: Path, directory: Path) -> TlsFiles:
    """A client certificate the cluster CA signed, with no role at all (``CN=stranger``)."""
    cert, key = mint_certificate(
        ca_cert.read_bytes(),
        ca_key.read_bytes(),
        "stranger",
        dns_names=[],
        ip_addresses=[],
        server=False,
        client=True,
    )
    (directory / "stranger.pem").write_bytes(cert)
    (directory / "stranger-key.pem").write_bytes(key)
    return TlsFiles(ca_cert, directory / "stranger.pem", directory / "stranger-key.pem")
