"""TLS material for the agent's mutual-TLS gRPC endpoint.

One private CA per cluster signs a server certificate for every node agent and one client
certificate for the provider. Agents accept only clients holding a certificate from that CA,
and clients check that the agent's certificate names the node they meant to reach. Because
agents are often dialled by IP or through a ``unix:`` socket, the client says which node
name to expect with ``grpc.ssl_target_name_override`` (``railnet.control.client``).

Keys are ECDSA P-256: small, fast, and accepted by every TLS stack gRPC ships with. Private
keys are written with mode 0600 from the moment their file exists, and every file is
replaced atomically, so a crash never leaves a half-written key or a world-readable one.
"""

from __future__ import annotations

import dataclasses
import datetime
import enum
import ipaddress
import os
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from railnet.core.errors import InvalidField, RailnetError
from railnet.core.names import check_node_name
from railnet.core.store_keys import node_user
from railnet.linux.files import write_atomic

CA_VALIDITY = datetime.timedelta(days=3650)
# Leaf certificates are cheap to reissue (`railnet certs node`), so they live shorter than
# the CA: a leaked node key stops being useful on its own.
LEAF_VALIDITY = datetime.timedelta(days=90)
REVOKED_FILE = "revoked.txt"
# Tolerate clocks a little behind the machine that minted the certificate.
CLOCK_SKEW = datetime.timedelta(minutes=5)

PROVIDER_COMMON_NAME = "railnet-provider"
OPERATOR_COMMON_NAME = "railnet-operator"
CA_CERT_FILE = "ca.pem"
CA_KEY_FILE = "ca-key.pem"
PROVIDER_CERT_FILE = "provider.pem"
PROVIDER_KEY_FILE = "provider-key.pem"
OPERATOR_CERT_FILE = "operator.pem"
OPERATOR_KEY_FILE = "operator-key.pem"
ROLE_URI_PREFIX = "spiffe://railnet/"


class Role(enum.Enum):
    """What a certificate's holder may do; the agent checks it on every call. It travels
    in the certificate as a URI subject alternative name, ``spiffe://railnet/<role>/<name>``."""

    PROVIDER = "provider"
    """Reads and writes environments: the Pulumi provider."""
    OPERATOR = "operator"
    """Reads only: status, documents, and the look-ups ``railnet exec`` needs."""
    NODE = "node"
    """Serves the agent API; calls nothing."""


def role_uri(role: Role, name: str) -> str:
    return f"{ROLE_URI_PREFIX}{role.value}/{name}"


@dataclass(frozen=True)
class Holder:
    """Who presented a certificate: its role (None: it carries none), name and serial."""

    role: Role | None
    name: str
    subject: str
    serial: int


def holder_of(cert_pem: bytes) -> Holder:
    """The role, name, subject and serial a certificate carries."""
    cert = x509.load_pem_x509_certificate(cert_pem)
    role: Role | None = None
    name = ""
    try:
        sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        uris = sans.get_values_for_type(x509.UniformResourceIdentifier)
    except x509.ExtensionNotFound:
        uris = []
    for uri in uris:
        if not uri.startswith(ROLE_URI_PREFIX):
            continue
        kind, _, rest = uri.removeprefix(ROLE_URI_PREFIX).partition("/")
        try:
            found = Role(kind)
        except ValueError:
            continue
        if role is not None and found is not role:
            return Holder(None, "", cert.subject.rfc4514_string(), cert.serial_number)
        role, name = found, rest
    return Holder(role, name, cert.subject.rfc4514_string(), cert.serial_number)


NODES_DIR = "nodes"

_KEY_MODE = 0o600
_CERT_MODE = 0o644
_DIR_MODE = 0o700


# --------------------------------------------------------------------------- minting


def mint_ca(common_name: str = "railnet CA") -> tuple[bytes, bytes]:
    """A new self-signed CA: ``(certificate PEM, private key PEM)``, valid for ten years."""
    _check_common_name(common_name)
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = _now()
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(_serial())
        .not_valid_before(now - CLOCK_SKEW)
        .not_valid_after(now + CA_VALIDITY)
        # path_length=0: this CA signs leaves only, never another CA.
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
        .sign(key, hashes.SHA256())
    )
    return _cert_pem(cert), _key_pem(key)


def mint_certificate(
    ca_cert_pem: bytes,
    ca_key_pem: bytes,
    common_name: str,
    *,
    dns_names: list[str],
    ip_addresses: list[str],
    server: bool,
    client: bool,
    role: Role | None = None,
    validity: datetime.timedelta = LEAF_VALIDITY,
) -> tuple[bytes, bytes]:
    """A leaf certificate signed by the CA: ``(certificate PEM, private key PEM)``.

    ``server`` and ``client`` choose the extended key usages (serverAuth, clientAuth); at
    least one must be set. ``role`` is what the holder may do (a certificate without one may
    do nothing). ``dns_names`` and ``ip_addresses`` become the subject
    alternative names, which is what TLS clients check a server against.
    """
    _check_common_name(common_name)
    if not (server or client):
        raise InvalidField(
            "server/client", (server, client), "a certificate must allow server or client use"
        )
    ca_cert, ca_key = _load_ca(ca_cert_pem, ca_key_pem)
    sans = _subject_alternative_names(dns_names, ip_addresses)
    if role is not None:
        sans.append(x509.UniformResourceIdentifier(role_uri(role, common_name)))
    usages = []
    if server:
        usages.append(ExtendedKeyUsageOID.SERVER_AUTH)
    if client:
        usages.append(ExtendedKeyUsageOID.CLIENT_AUTH)

    key = ec.generate_private_key(ec.SECP256R1())
    now = _now()
    if validity <= datetime.timedelta(0):
        raise InvalidField("validity", str(validity), "must be positive")
    not_after = min(now + validity, ca_cert.not_valid_after_utc)
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(_serial())
        .not_valid_before(now - CLOCK_SKEW)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), False
        )
    )
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    return _cert_pem(builder.sign(ca_key, hashes.SHA256())), _key_pem(key)


# --------------------------------------------------------------------------- files


@dataclass(frozen=True)
class TlsFiles:
    """Where one party's TLS material lives on disk."""

    ca: Path
    """The cluster CA certificate, used to verify the other side."""
    cert: Path
    """This party's certificate, signed by the CA."""
    key: Path
    """This party's private key (mode 0600)."""

    def load(self) -> tuple[bytes, bytes, bytes]:
        """Read ``(ca, cert, key)`` PEM bytes, or say which file is missing or unusable."""
        return (
            _read_pem("CA certificate", self.ca),
            _read_pem("certificate", self.cert),
            _read_pem("private key", self.key),
        )


@dataclass(frozen=True)
class ClusterTls:
    """The files ``write_cluster_tls`` wrote or reused."""

    directory: Path
    ca_cert: Path
    """The CA certificate the cluster trusts, in ``directory``."""
    ca_key: Path
    """The CA's key, in its own directory."""
    ca_created: bool
    """False when an existing CA in the directory was reused."""
    provider: TlsFiles
    """The provider's client certificate."""
    nodes: Mapping[str, TlsFiles]
    """The node agents' server certificates written by this call, by node name."""
    provider_created: bool = True
    """False when an existing provider certificate from the same CA was kept."""
    operator: TlsFiles | None = None
    """The operators' read-only client certificate."""
    kept: Mapping[str, str] = dataclasses.field(default_factory=dict)
    """Leaves that existed and were left as they are (no ``force``): what (``node
    node-1``, ``provider``, ``operator``) → why it may need ``--force`` ("" when fine)."""


def node_tls_files(directory: Path, node_name: str) -> TlsFiles:
    """The paths ``write_cluster_tls`` uses for one node's agent."""
    check_node_name("node", node_name)
    nodes = directory / NODES_DIR
    return TlsFiles(
        ca=directory / CA_CERT_FILE,
        cert=nodes / f"{node_name}.pem",
        key=nodes / f"{node_name}-key.pem",
    )


def provider_tls_files(directory: Path) -> TlsFiles:
    """The paths ``write_cluster_tls`` uses for the provider's client certificate."""
    return TlsFiles(
        ca=directory / CA_CERT_FILE,
        cert=directory / PROVIDER_CERT_FILE,
        key=directory / PROVIDER_KEY_FILE,
    )


def operator_tls_files(directory: Path) -> TlsFiles:
    """The paths ``write_cluster_tls`` uses for the operators' read-only certificate."""
    return TlsFiles(
        ca=directory / CA_CERT_FILE,
        cert=directory / OPERATOR_CERT_FILE,
        key=directory / OPERATOR_KEY_FILE,
    )


def issued_nodes(directory: Path) -> dict[str, list[str]]:
    """The nodes ``directory`` holds certificates for, with the IP addresses they name."""
    found: dict[str, list[str]] = {}
    nodes = directory / NODES_DIR
    for path in sorted(nodes.glob("*.pem")) if nodes.exists() else []:
        if path.name.endswith("-key.pem"):
            continue
        cert = x509.load_pem_x509_certificate(path.read_bytes())
        try:
            sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
            ips = [str(ip) for ip in sans.get_values_for_type(x509.IPAddress)]
        except x509.ExtensionNotFound:
            ips = []
        found[path.name.removesuffix(".pem")] = ips
    return found


def revoke(directory: Path, serial: int) -> Path:
    """Add ``serial`` to the cluster's revocation list (``DIR/revoked.txt``), which agents
    reload with their TLS files; returns the list's path."""
    path = directory / REVOKED_FILE
    lines = path.read_text().splitlines() if path.exists() else ["# revoked serials, hex"]
    entry = format(serial, "x")
    if entry not in (line.split("#", 1)[0].strip() for line in lines):
        lines.append(entry)
    write_atomic(path, ("\n".join(lines) + "\n").encode(), _CERT_MODE)
    return path


def default_ca_dir(directory: Path) -> Path:
    """Where the CA lives unless told otherwise: a sibling of the cluster's TLS directory
    (``tls`` → ``tls-ca``), which no cluster file references."""
    return directory.parent / f"{directory.name}-ca"


def write_cluster_tls(
    directory: Path,
    node_names: list[str],
    node_ips: dict[str, list[str]] | None = None,
    *,
    ca_dir: Path | None = None,
    passphrase: bytes | None = None,
    validity: datetime.timedelta = LEAF_VALIDITY,
    renew: bool = False,
    force: bool = False,
) -> ClusterTls:
    """Write a cluster's TLS material into ``directory``, signed by the CA in ``ca_dir``.

    The CA's key lives only in ``ca_dir`` (mode 0700, the key 0600, encrypted when a
    ``passphrase`` is given); ``directory`` gets its certificate (the trust bundle) and
    every leaf. A CA already in ``ca_dir`` is reused, so running this again to add a node
    keeps every certificate already handed out valid. The listed nodes' certificates are
    (re)issued; the provider's and the operators' only when missing, not from this CA, or
    without their role (or always, with ``renew``). Leaves live ``validity``.

    Nothing that exists is overwritten unless ``force`` (or ``renew``) says so: an existing
    leaf is kept and listed in ``ClusterTls.kept`` with what may be wrong with it.
    """
    ca_dir = ca_dir if ca_dir is not None else default_ca_dir(directory)
    node_ips = dict(node_ips or {})
    for name in node_names:
        check_node_name("node", name)
    if len(set(node_names)) != len(node_names):
        raise InvalidField("node", node_names, "each node may be listed only once")
    unknown = sorted(set(node_ips) - set(node_names))
    if unknown:
        raise InvalidField(
            "--node-ip", unknown, "these nodes have addresses but are not given with --node"
        )
    for name, ips in node_ips.items():
        _parse_ips(f"--node-ip {name}=", ips)
    for given, path in (("--dir", directory), ("--ca-dir", ca_dir)):
        if path.exists() and not path.is_dir():
            raise InvalidField(given, str(path), "is a file; give a directory")

    directory.mkdir(mode=_DIR_MODE, parents=True, exist_ok=True)
    (directory / NODES_DIR).mkdir(mode=_DIR_MODE, exist_ok=True)

    legacy_key = directory / CA_KEY_FILE
    if legacy_key.exists():
        raise RailnetError(
            f"{legacy_key}: the CA key must not sit next to the certificates the cluster file "
            f"points at; move it and {directory / CA_CERT_FILE} to {ca_dir}/ (mode 0700) "
            "and run again"
        )
    ca_dir.mkdir(mode=_DIR_MODE, parents=True, exist_ok=True)
    os.chmod(ca_dir, _DIR_MODE)
    ca_cert_path = ca_dir / CA_CERT_FILE
    ca_key_path = ca_dir / CA_KEY_FILE
    bundle = directory / CA_CERT_FILE
    ca_created = not (ca_cert_path.exists() or ca_key_path.exists())
    if ca_created and bundle.exists():
        raise RailnetError(
            f"{directory} trusts a CA whose key is expected at {ca_key_path}, which does not "
            "exist; point --ca-dir at the directory that holds it (it may be offline: mount "
            "it for this command), rather than starting a new CA"
        )
    if ca_cert_path.exists() != ca_key_path.exists():
        present, absent = (
            (ca_cert_path, ca_key_path) if ca_cert_path.exists() else (ca_key_path, ca_cert_path)
        )
        raise RailnetError(
            f"found {present} but not {absent}; restore the missing file, or move both away "
            f"to start a new CA (every node and provider certificate must then be reissued)"
        )
    if ca_created:
        ca_cert, ca_key = mint_ca()
        stored_key = ca_key if passphrase is None else _encrypted(ca_key, passphrase)
        # The key first: a certificate without its key would look like a usable CA.
        write_atomic(ca_key_path, stored_key, _KEY_MODE)
        write_atomic(ca_cert_path, ca_cert, _CERT_MODE)
    else:
        ca_cert = _read_pem("CA certificate", ca_cert_path)
        ca_key = _unlocked(ca_key_path, passphrase)
        _load_ca(ca_cert, ca_key)
    write_atomic(bundle, ca_cert, _CERT_MODE)

    kept: dict[str, str] = {}
    nodes: dict[str, TlsFiles] = {}
    for name in node_names:
        files = node_tls_files(directory, name)
        if not (renew or force) and _exists(files, f"node {name}"):
            kept[f"node {name}"] = _doubt(files, ca_cert, Role.NODE, node_ips.get(name))
            continue
        cert, key = mint_certificate(
            ca_cert,
            ca_key,
            name,
            dns_names=[name, "localhost"],
            ip_addresses=list(node_ips.get(name, [])),
            server=True,
            client=False,
            role=Role.NODE,
            validity=validity,
        )
        write_atomic(files.key, key, _KEY_MODE)
        write_atomic(files.cert, cert, _CERT_MODE)
        nodes[name] = files

    clients: dict[Role, tuple[TlsFiles, bool]] = {}
    for role, files, common_name in (
        (Role.PROVIDER, provider_tls_files(directory), PROVIDER_COMMON_NAME),
        (Role.OPERATOR, operator_tls_files(directory), OPERATOR_COMMON_NAME),
    ):
        # Kept when it is from this CA and carries its role; reissued otherwise (older
        # certificates carry no role and would be refused by every agent).
        created = renew or force or not _exists(files, role.value)
        if not created:
            kept[role.value] = _doubt(files, ca_cert, role, None)
        if created:
            cert, key = mint_certificate(
                ca_cert,
                ca_key,
                common_name,
                dns_names=[],
                ip_addresses=[],
                server=False,
                client=True,
                role=role,
                validity=validity,
            )
            write_atomic(files.key, key, _KEY_MODE)
            write_atomic(files.cert, cert, _CERT_MODE)
        clients[role] = (files, created)
    provider, provider_created = clients[Role.PROVIDER]

    return ClusterTls(
        directory=directory,
        ca_cert=bundle,
        ca_key=ca_key_path,
        ca_created=ca_created,
        provider=provider,
        nodes=nodes,
        provider_created=provider_created,
        operator=clients[Role.OPERATOR][0],
        kept=kept,
    )


STORE_DIR = "etcd"
STORE_SERVER_NAME = "railnet-etcd"
"""A DNS name every etcd member's certificate carries: clients that reach a member by a unix
socket, or by an address its certificate does not name, expect this one."""
STORE_MEMBER_PREFIX = "etcd-member-"
"""The common name of a member's certificate is this and the member's name: no etcd user."""
STORE_ADMIN_COMMON_NAME = "root"
"""etcd's administrator (its user ``root``): sets up users and roles, nothing else."""
STORE_ADMIN_CERT_FILE = "store-admin.pem"
STORE_ADMIN_KEY_FILE = "store-admin-key.pem"


def store_member_tls_files(directory: Path, member: str) -> TlsFiles:
    """The paths ``write_store_tls`` uses for one etcd member (server and peer)."""
    check_node_name("member", member)
    return TlsFiles(
        ca=directory / CA_CERT_FILE,
        cert=directory / STORE_DIR / f"{member}.pem",
        key=directory / STORE_DIR / f"{member}-key.pem",
    )


def node_store_tls_files(directory: Path, node_name: str) -> TlsFiles:
    """A node agent's client certificate for the control store: the etcd user of the
    node's name. It carries no railnet role, so no agent accepts it; and the node's server
    certificate is no client, so neither credential stands in for the other."""
    check_node_name("node", node_name)
    nodes = directory / NODES_DIR
    return TlsFiles(
        ca=directory / CA_CERT_FILE,
        cert=nodes / f"{node_name}-store.pem",
        key=nodes / f"{node_name}-store-key.pem",
    )


def store_admin_tls_files(ca_dir: Path) -> TlsFiles:
    """The store administrator's certificate: kept with the CA's key, never in a cluster
    file, since it can change every role."""
    return TlsFiles(
        ca=ca_dir / CA_CERT_FILE,
        cert=ca_dir / STORE_ADMIN_CERT_FILE,
        key=ca_dir / STORE_ADMIN_KEY_FILE,
    )


def write_store_tls(
    directory: Path,
    members: Mapping[str, list[str]],
    nodes: list[str],
    *,
    ca_dir: Path | None = None,
    passphrase: bytes | None = None,
    validity: datetime.timedelta = LEAF_VALIDITY,
) -> dict[str, TlsFiles]:
    """Certificates for the etcd members (server and peer use, the members' addresses as
    SANs) in ``directory/etcd/``, each of ``nodes`` a client certificate for the store
    (``node_store_tls_files``), and the store administrator's in the CA's directory, all
    signed by the CA that ``write_cluster_tls`` made. Returns the members' files."""
    ca_dir = ca_dir if ca_dir is not None else default_ca_dir(directory)
    ca_cert = _read_pem("CA certificate", ca_dir / CA_CERT_FILE)
    ca_key = _unlocked(ca_dir / CA_KEY_FILE, passphrase)
    (directory / STORE_DIR).mkdir(mode=_DIR_MODE, parents=True, exist_ok=True)
    written: dict[str, TlsFiles] = {}
    for member, ips in members.items():
        _parse_ips(f"--member-ip {member}=", ips)
        files = store_member_tls_files(directory, member)
        cert, key = mint_certificate(
            ca_cert,
            ca_key,
            # Not the member's bare name: a member's certificate is a client one too (for
            # its peers), and etcd would take a bare name for a user, maybe a node's.
            f"{STORE_MEMBER_PREFIX}{member}",
            dns_names=[member, STORE_SERVER_NAME, "localhost"],
            ip_addresses=list(ips),
            server=True,
            client=True,  # members present it to each other
            validity=validity,
        )
        write_atomic(files.key, key, _KEY_MODE)
        write_atomic(files.cert, cert, _CERT_MODE)
        written[member] = files
    (directory / NODES_DIR).mkdir(mode=_DIR_MODE, exist_ok=True)
    for node in nodes:
        node_user(node)  # never root, the provider or the operators
        files = node_store_tls_files(directory, node)
        cert, key = mint_certificate(
            ca_cert,
            ca_key,
            node,
            dns_names=[],
            ip_addresses=[],
            server=False,
            client=True,
            validity=validity,
        )
        write_atomic(files.key, key, _KEY_MODE)
        write_atomic(files.cert, cert, _CERT_MODE)
    admin = store_admin_tls_files(ca_dir)
    if not _exists(admin, "store administrator"):
        cert, key = mint_certificate(
            ca_cert,
            ca_key,
            STORE_ADMIN_COMMON_NAME,
            dns_names=[],
            ip_addresses=[],
            server=False,
            client=True,
            validity=validity,
        )
        write_atomic(admin.key, key, _KEY_MODE)
        write_atomic(admin.cert, cert, _CERT_MODE)
    return written


def _exists(files: TlsFiles, what: str) -> bool:
    """Whether the pair exists; half a pair is refused (the other half is lost)."""
    cert, key = files.cert.exists(), files.key.exists()
    if cert != key:
        present, absent = (files.cert, files.key) if cert else (files.key, files.cert)
        raise RailnetError(
            f"{what}: found {present} but not {absent}; restore it, or pass --force to issue "
            "a new pair"
        )
    return cert


def _doubt(files: TlsFiles, ca_cert: bytes, role: Role, ips: list[str] | None) -> str:
    """What may be wrong with a kept leaf ("" when nothing): --force reissues it."""
    if not _issued_by(files, ca_cert, role):
        return "it is not a current certificate of this CA for its role, or expires within 30 days"
    if ips:
        names = _ip_sans(files.cert)
        missing = [ip for ip in ips if str(ipaddress.ip_address(ip)) not in names]
        if missing:
            return f"it does not name {', '.join(missing)}"
    return ""


def _ip_sans(cert_path: Path) -> set[str]:
    cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
    try:
        sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return set()
    return {str(ip) for ip in sans.get_values_for_type(x509.IPAddress)}


# --------------------------------------------------------------------------- helpers


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def _serial() -> int:
    # RFC 5280: positive, at most 20 octets; 159 random bits satisfy both.
    return secrets.randbits(159) | 1


def _cert_pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _redacted(pem: bytes) -> str:
    # Never echo key material into an error message or a log.
    return f"<{len(pem)} bytes>"


def _check_common_name(common_name: str) -> None:
    if not isinstance(common_name, str) or not 1 <= len(common_name) <= 64:
        raise InvalidField("common_name", common_name, "must be 1-64 characters")


def _encrypted(key_pem: bytes, passphrase: bytes) -> bytes:
    if not passphrase:
        raise InvalidField("passphrase", "", "must not be empty")
    key = serialization.load_pem_private_key(key_pem, password=None)
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(passphrase),
    )


def _unlocked(path: Path, passphrase: bytes | None) -> bytes:
    """The CA key at ``path`` as unencrypted PEM (in memory only)."""
    pem = _read_pem("CA private key", path)
    encrypted = b"ENCRYPTED" in pem.split(b"\n", 1)[0]
    if encrypted and passphrase is None:
        raise RailnetError(
            f"the CA key {path} is encrypted; give its passphrase (--ca-passphrase-file)"
        )
    if not encrypted:
        return pem
    try:
        key = serialization.load_pem_private_key(pem, password=passphrase)
    except (ValueError, TypeError):
        raise RailnetError(f"the passphrase does not open the CA key {path}") from None
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _load_ca(
    ca_cert_pem: bytes, ca_key_pem: bytes
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    try:
        ca_cert = x509.load_pem_x509_certificate(ca_cert_pem)
    except ValueError as exc:
        raise InvalidField(
            "ca_cert_pem", _redacted(ca_cert_pem), f"is not a PEM certificate ({exc})"
        ) from None
    try:
        ca_key = serialization.load_pem_private_key(ca_key_pem, password=None)
    except (ValueError, TypeError) as exc:
        raise InvalidField(
            "ca_key_pem",
            _redacted(ca_key_pem),
            f"is not an unencrypted PEM private key ({exc})",
        ) from None
    if not isinstance(ca_key, ec.EllipticCurvePrivateKey):
        raise InvalidField(
            "ca_key_pem", _redacted(ca_key_pem), "must be an ECDSA key made by mint_ca"
        )
    try:
        constraints = ca_cert.extensions.get_extension_for_class(x509.BasicConstraints)
        is_ca = constraints.value.ca
    except x509.ExtensionNotFound:
        is_ca = False
    if not is_ca:
        raise InvalidField(
            "ca_cert_pem",
            ca_cert.subject.rfc4514_string(),
            "is not a CA certificate (basicConstraints CA:TRUE is missing)",
        )
    if ca_cert.public_key() != ca_key.public_key():
        raise InvalidField(
            "ca_key_pem",
            _redacted(ca_key_pem),
            f"does not belong to the CA certificate {ca_cert.subject.rfc4514_string()}",
        )
    return ca_cert, ca_key


def _parse_ips(
    field: str, values: list[str]
) -> list[ipaddress.IPv4Address | ipaddress.IPv6Address]:
    parsed = []
    for value in values:
        try:
            parsed.append(ipaddress.ip_address(value))
        except ValueError:
            raise InvalidField(
                field, value, "must be an IPv4 or IPv6 address such as 10.0.0.1"
            ) from None
    return parsed


def _subject_alternative_names(
    dns_names: list[str], ip_addresses: list[str]
) -> list[x509.GeneralName]:
    sans: list[x509.GeneralName] = []
    for name in dns_names:
        labels = name.split(".") if isinstance(name, str) else [""]
        if (
            not name
            or len(name) > 253
            or not all(1 <= len(label) <= 63 and label.isascii() for label in labels)
        ):
            raise InvalidField("dns_names", name, "must be a DNS name such as node-1")
        sans.append(x509.DNSName(name))
    for ip in _parse_ips("ip_addresses", ip_addresses):
        sans.append(x509.IPAddress(ip))
    return sans


def _read_pem(role: str, path: Path) -> bytes:
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise RailnetError(
            f"TLS {role} file {path} does not exist; create the cluster's TLS material "
            f"with `railnet certs init --dir DIR --node NAME`"
        ) from None
    except OSError as exc:
        raise RailnetError(
            f"TLS {role} file {path} cannot be read ({exc.strerror}); check its "
            f"permissions and that this user may read it"
        ) from None
    if b"-----BEGIN " not in data:
        raise RailnetError(
            f"TLS {role} file {path} is not PEM; point at the file `railnet certs` wrote"
        )
    return data


def _issued_by(files: TlsFiles, ca_cert_pem: bytes, role: Role) -> bool:
    """Whether ``files`` hold a readable certificate and key signed by this CA, for
    ``role``."""
    try:
        pem = files.cert.read_bytes()
        cert = x509.load_pem_x509_certificate(pem)
        files.key.read_bytes()
        cert.verify_directly_issued_by(x509.load_pem_x509_certificate(ca_cert_pem))
        if holder_of(pem).role is not role:
            return False
    except (OSError, ValueError, TypeError, InvalidSignature):
        return False
    return cert.not_valid_after_utc > _now() + datetime.timedelta(days=30)
