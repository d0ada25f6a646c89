"""The cluster's TLS material: the certificate chain and the files on disk.

Real mutual TLS over gRPC with this material is in ``tests/agent/test_mtls.py``."""

from __future__ import annotations

import argparse
import datetime
import ipaddress
import stat
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from railnet.cli.certs import add_certs_parser
from railnet.core.errors import InvalidField, RailnetError
from railnet.pki.certs import (
    ClusterTls,
    mint_ca,
    mint_certificate,
    node_tls_files,
    write_cluster_tls,
)

pytestmark = pytest.mark.unit


# --------------------------------------------------------------------------- helpers


def load_cert(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def common_name(cert: x509.Certificate) -> str:
    value = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value
    assert isinstance(value, str)
    return value


def ekus(cert: x509.Certificate) -> set[x509.ObjectIdentifier]:
    return set(cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture
def cluster(tmp_path: Path) -> ClusterTls:
    return write_cluster_tls(
        tmp_path / "tls",
        ["node-1", "node-2"],
        {"node-1": ["10.0.0.1", "fd00::1"]},
    )


# --------------------------------------------------------------------------- chain


def test_node_certificate_is_signed_by_the_ca_and_names_the_node(cluster: ClusterTls) -> None:
    ca = load_cert(cluster.ca_cert)
    node = load_cert(cluster.nodes["node-1"].cert)

    node.verify_directly_issued_by(ca)
    assert common_name(node) == "node-1"
    san = node.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert set(san.get_values_for_type(x509.DNSName)) == {"node-1", "localhost"}
    assert set(san.get_values_for_type(x509.IPAddress)) == {
        ipaddress.ip_address("10.0.0.1"),
        ipaddress.ip_address("fd00::1"),
    }
    assert ekus(node) == {ExtendedKeyUsageOID.SERVER_AUTH}
    assert not node.extensions.get_extension_for_class(x509.BasicConstraints).value.ca


def test_ca_is_a_ten_year_signing_ca(cluster: ClusterTls) -> None:
    ca = load_cert(cluster.ca_cert)

    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert ca.extensions.get_extension_for_class(x509.KeyUsage).value.key_cert_sign
    lifetime = ca.not_valid_after_utc - ca.not_valid_before_utc
    assert lifetime.days >= 3650
    ca.verify_directly_issued_by(ca)


def test_provider_certificate_is_a_client_certificate(cluster: ClusterTls) -> None:
    provider = load_cert(cluster.provider.cert)

    provider.verify_directly_issued_by(load_cert(cluster.ca_cert))
    assert common_name(provider) == "railnet-provider"
    assert ekus(provider) == {ExtendedKeyUsageOID.CLIENT_AUTH}


def test_keys_are_private_and_no_temporary_files_remain(cluster: ClusterTls) -> None:
    keys = [cluster.ca_key, cluster.provider.key] + [f.key for f in cluster.nodes.values()]
    certs = [cluster.ca_cert, cluster.provider.cert] + [f.cert for f in cluster.nodes.values()]

    assert {path: mode(path) for path in keys} == {path: 0o600 for path in keys}
    assert {path: mode(path) for path in certs} == {path: 0o644 for path in certs}
    names = sorted(
        p.relative_to(cluster.directory).as_posix() for p in cluster.directory.rglob("*")
    )
    assert names == [
        "ca.pem",
        "nodes",
        "nodes/node-1-key.pem",
        "nodes/node-1.pem",
        "nodes/node-2-key.pem",
        "nodes/node-2.pem",
        "operator-key.pem",
        "operator.pem",
        "provider-key.pem",
        "provider.pem",
    ]


def test_adding_a_node_reuses_the_ca_and_keeps_earlier_certificates(
    cluster: ClusterTls,
) -> None:
    ca_before = cluster.ca_cert.read_bytes()
    provider_before = cluster.provider.cert.read_bytes()

    again = write_cluster_tls(cluster.directory, ["node-3"])

    assert not again.ca_created
    assert not again.provider_created
    assert cluster.ca_cert.read_bytes() == ca_before
    assert cluster.provider.cert.read_bytes() == provider_before
    ca = load_cert(cluster.ca_cert)
    load_cert(again.nodes["node-3"].cert).verify_directly_issued_by(ca)
    load_cert(cluster.nodes["node-1"].cert).verify_directly_issued_by(ca)


def test_a_ca_certificate_without_its_key_is_refused(tmp_path: Path) -> None:
    cert, _ = mint_ca()
    (tmp_path / "ca.pem").write_bytes(cert)

    with pytest.raises(RailnetError, match=r"ca-key\.pem"):
        write_cluster_tls(tmp_path, ["node-1"])


def test_minting_rejects_bad_input_without_echoing_key_material() -> None:
    ca_cert, ca_key = mint_ca()
    other_cert, _ = mint_ca("other CA")
    leaf_cert, leaf_key = mint_certificate(
        ca_cert, ca_key, "leaf", dns_names=["leaf"], ip_addresses=[], server=True, client=False
    )
    mint = {"dns_names": ["n"], "ip_addresses": [], "server": True, "client": False}

    with pytest.raises(InvalidField, match="ip_addresses") as bad_ip:
        mint_certificate(
            ca_cert,
            ca_key,
            "n",
            dns_names=[],
            ip_addresses=["10.0.0.300"],
            server=True,
            client=False,
        )
    assert "10.0.0.300" in str(bad_ip.value)
    with pytest.raises(InvalidField, match="server or client"):
        mint_certificate(
            ca_cert, ca_key, "n", dns_names=[], ip_addresses=[], server=False, client=False
        )
    with pytest.raises(InvalidField, match="does not belong") as wrong_key:
        mint_certificate(other_cert, ca_key, "n", **mint)  # type: ignore[arg-type]
    assert b"PRIVATE KEY" not in str(wrong_key.value).encode()
    with pytest.raises(InvalidField, match="not a CA"):
        mint_certificate(leaf_cert, leaf_key, "n", **mint)  # type: ignore[arg-type]
    with pytest.raises(InvalidField, match="node"):
        write_cluster_tls(Path("/nonexistent"), ["Node_1"])


def test_load_names_the_missing_file(cluster: ClusterTls) -> None:
    files = cluster.nodes["node-2"]
    files.key.unlink()

    with pytest.raises(RailnetError, match=r"private key file .*node-2-key\.pem does not exist"):
        files.load()


def test_load_returns_the_three_files(cluster: ClusterTls) -> None:
    files = cluster.nodes["node-1"]

    assert files.load() == (
        files.ca.read_bytes(),
        files.cert.read_bytes(),
        files.key.read_bytes(),
    )


# --------------------------------------------------------------------------- CLI


def run_cli(*argv: str) -> int:
    parser = argparse.ArgumentParser(prog="railnet")
    add_certs_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(argv)
    code = args.func(args)
    assert isinstance(code, int)
    return code


def test_cli_init_then_add_a_node(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    directory = tmp_path / "tls"

    assert (
        run_cli(
            "certs",
            "init",
            "--dir",
            str(directory),
            "--node",
            "node-1",
            "--node-ip",
            "node-1=192.0.2.1",
        )
        == 0
    )
    first = capsys.readouterr().out
    assert (
        run_cli("certs", "node", "--dir", str(directory), "--node", "node-2", "--ip", "192.0.2.2")
        == 0
    )
    second = capsys.readouterr().out

    assert "created CA" in first
    assert "node-1" in first
    assert "reused CA" in second
    assert "node-2" in second
    node_2 = load_cert(node_tls_files(directory, "node-2").cert)
    node_2.verify_directly_issued_by(load_cert(directory / "ca.pem"))
    san = node_2.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address("192.0.2.2")]


def test_cli_node_without_a_ca_fails_with_a_hint(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = run_cli("certs", "node", "--dir", str(tmp_path), "--node", "node-1")

    assert code == 2
    assert "railnet certs init" in capsys.readouterr().err
    assert not (tmp_path / "ca.pem").exists()


def test_cli_rejects_a_bad_address(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = run_cli(
        "certs", "init", "--dir", str(tmp_path), "--node", "node-1", "--node-ip", "node-1=not-an-ip"
    )

    assert code == 2
    assert "not-an-ip" in capsys.readouterr().err


# --------------------------------------------------------------------------- CA custody


def test_the_ca_key_lives_in_its_own_private_directory(cluster: ClusterTls) -> None:
    ca_dir = cluster.ca_key.parent
    assert ca_dir != cluster.directory and not (cluster.directory / "ca-key.pem").exists()
    assert mode(ca_dir) == 0o700 and mode(cluster.ca_key) == 0o600
    assert sorted(p.name for p in ca_dir.iterdir()) == ["ca-key.pem", "ca.pem"]
    # The cluster's trust bundle is the CA certificate, copied next to the leaves.
    assert cluster.ca_cert.read_bytes() == (ca_dir / "ca.pem").read_bytes()


def test_minting_without_the_ca_key_says_where_it_is_expected(
    cluster: ClusterTls, tmp_path: Path
) -> None:
    elsewhere = tmp_path / "not-the-ca"
    with pytest.raises(RailnetError) as missing:
        write_cluster_tls(cluster.directory, ["node-3"], ca_dir=elsewhere)
    assert str(elsewhere / "ca-key.pem") in str(missing.value)
    assert not (cluster.directory / "nodes" / "node-3.pem").exists()


def test_an_encrypted_ca_key_needs_its_passphrase(tmp_path: Path) -> None:
    tls = write_cluster_tls(tmp_path / "tls", ["node-1"], passphrase=b"correct horse")
    assert b"ENCRYPTED" in tls.ca_key.read_bytes()
    with pytest.raises(RailnetError, match="encrypted; give its passphrase"):
        write_cluster_tls(tmp_path / "tls", ["node-2"])
    with pytest.raises(RailnetError, match="does not open"):
        write_cluster_tls(tmp_path / "tls", ["node-2"], passphrase=b"wrong")
    again = write_cluster_tls(tmp_path / "tls", ["node-2"], passphrase=b"correct horse")
    assert load_cert(again.nodes["node-2"].cert).issuer == load_cert(again.ca_cert).subject


def test_a_ca_key_next_to_the_certificates_is_refused(tmp_path: Path) -> None:
    (tmp_path / "tls").mkdir()
    _, key = mint_ca()
    (tmp_path / "tls" / "ca-key.pem").write_bytes(key)
    with pytest.raises(RailnetError, match="must not sit next to"):
        write_cluster_tls(tmp_path / "tls", ["node-1"])


# --------------------------------------------------------------------------- lifetimes


def test_leaf_certificates_live_90_days_by_default(cluster: ClusterTls) -> None:
    for path in (cluster.provider.cert, cluster.nodes["node-1"].cert):
        cert = load_cert(path)
        days = (cert.not_valid_after_utc - cert.not_valid_before_utc).days
        assert days == 90  # 90 days from five minutes before issue, rounded down


def test_renew_reissues_every_leaf_keeping_names_and_addresses(
    cluster: ClusterTls, tmp_path: Path
) -> None:
    from railnet.pki.certs import issued_nodes

    before = {
        p: load_cert(p).serial_number
        for p in cluster.directory.rglob("*.pem")
        if not p.name.endswith("-key.pem")
    }
    nodes = issued_nodes(cluster.directory)
    assert nodes == {"node-1": ["10.0.0.1", "fd00::1"], "node-2": []}
    again = write_cluster_tls(
        cluster.directory, sorted(nodes), nodes, renew=True, validity=datetime.timedelta(days=7)
    )
    assert issued_nodes(cluster.directory) == nodes
    for path in (again.provider.cert, again.nodes["node-1"].cert):
        assert load_cert(path).serial_number != before[path]
        cert = load_cert(path)
        assert (cert.not_valid_after_utc - cert.not_valid_before_utc).days == 7
    assert load_cert(again.ca_cert).serial_number == before[cluster.ca_cert]


def test_the_revocation_list_is_serials_in_hex(tmp_path: Path) -> None:
    from railnet.agent.credentials import read_revoked
    from railnet.pki.certs import revoke

    path = revoke(tmp_path, 0xABC)
    revoke(tmp_path, 0xABC)  # once is enough
    revoke(tmp_path, 17)
    assert read_revoked(path) == {0xABC, 17}
    assert read_revoked(tmp_path / "none.txt") == frozenset()
    path.write_text("abc\nnot-a-serial\n")
    with pytest.raises(RailnetError, match=r"revoked.txt:2: 'not-a-serial'"):
        read_revoked(path)


def test_store_certificates_give_each_party_only_its_use(tmp_path: Path) -> None:
    from railnet.pki.certs import (
        STORE_SERVER_NAME,
        holder_of,
        node_store_tls_files,
        store_admin_tls_files,
        store_member_tls_files,
        write_store_tls,
    )

    tls, ca_dir = tmp_path / "tls", tmp_path / "ca"
    write_cluster_tls(tls, ["node-1"], ca_dir=ca_dir)
    write_store_tls(tls, {"etcd-1": ["10.0.0.1"]}, ["node-1"], ca_dir=ca_dir)

    def usages(cert: x509.Certificate) -> set[x509.ObjectIdentifier]:
        return set(cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value)

    member = load_cert(store_member_tls_files(tls, "etcd-1").cert)
    sans = member.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert STORE_SERVER_NAME in sans.get_values_for_type(x509.DNSName)
    assert ipaddress.ip_address("10.0.0.1") in sans.get_values_for_type(x509.IPAddress)
    assert usages(member) == {ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH}
    # The node's etcd user is its name; the certificate is a client one with no railnet
    # role, so no agent accepts it, and the node's server certificate stays server-only.
    store_client = node_store_tls_files(tls, "node-1")
    assert common_name(load_cert(store_client.cert)) == "node-1"
    assert usages(load_cert(store_client.cert)) == {ExtendedKeyUsageOID.CLIENT_AUTH}
    assert holder_of(store_client.cert.read_bytes()).role is None
    assert usages(load_cert(node_tls_files(tls, "node-1").cert)) == {
        ExtendedKeyUsageOID.SERVER_AUTH
    }
    assert stat.S_IMODE(store_client.key.stat().st_mode) == 0o600
    admin = store_admin_tls_files(ca_dir)
    assert common_name(load_cert(admin.cert)) == "root"
    assert admin.cert.parent == ca_dir and not (tls / admin.cert.name).exists()
