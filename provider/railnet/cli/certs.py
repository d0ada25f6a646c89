"""`railnet certs`: mint the cluster CA, node agent certificates, the provider's (read and
write) and the operators' (read only).

A thin edge over ``railnet.pki.certs``: it parses arguments, calls it, and reports what it
wrote. Bad input is reported as one line on stderr with exit code 2, never a traceback.
"""

from __future__ import annotations

import argparse
import datetime
import sys
from pathlib import Path
from typing import Any

from railnet.core.errors import RailnetError
from railnet.pki.certs import (
    LEAF_VALIDITY,
    ClusterTls,
    default_ca_dir,
    holder_of,
    issued_nodes,
    node_store_tls_files,
    revoke,
    store_admin_tls_files,
    write_cluster_tls,
    write_store_tls,
)

EXIT_OK = 0
EXIT_BAD_INPUT = 2


def add_certs_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``certs init`` and ``certs node`` to the ``railnet`` command."""
    certs = subparsers.add_parser(
        "certs",
        help="mint the cluster CA, node certificates and the provider's client certificate",
        description="Mint the TLS material for the agents' mutual-TLS gRPC endpoints.",
    )
    certs.set_defaults(func=run_certs, certs_command=None)
    actions = certs.add_subparsers(dest="certs_command", metavar="{init,node,store,renew,revoke}")

    init = actions.add_parser(
        "init",
        help="create (or reuse) the CA and issue node and provider certificates",
        description=(
            "Create the CA in DIR (or reuse the one already there), issue a server "
            "certificate for every --node and a client certificate for the provider."
        ),
    )
    init.add_argument(
        "--dir",
        type=Path,
        required=True,
        metavar="DIR",
        help="directory for the certificates and keys, created when missing (required)",
    )
    _add_ca_flags(init)
    init.add_argument(
        "--node",
        dest="nodes",
        action="append",
        required=True,
        metavar="NAME",
        help="a node name (required; repeat for each node)",
    )
    init.add_argument(
        "--node-ip",
        dest="node_ips",
        action="append",
        default=[],
        type=_node_ip,
        metavar="NAME=IP",
        help="an IP address the node's agent is dialled at, put in its certificate "
        "(repeatable; default: none, the node is dialled by name or unix socket)",
    )
    _add_force_flag(init)

    node = actions.add_parser(
        "node",
        help="issue a certificate for one node with the existing CA",
        description="Issue (or reissue) one node's certificate with the CA already in DIR.",
    )
    node.add_argument("--dir", type=Path, required=True, help="directory holding ca.pem (required)")
    _add_ca_flags(node)
    node.add_argument("--node", required=True, metavar="NAME", help="the node name (required)")
    node.add_argument(
        "--node-ip",
        dest="ips",
        action="append",
        default=[],
        metavar="[NAME=]IP",
        help="an IP address the node's agent is dialled at, as for 'certs init' (NAME= is "
        "optional here; repeatable; default: none)",
    )
    node.add_argument("--ip", dest="ips", action="append", help=argparse.SUPPRESS)
    _add_force_flag(node)

    store = actions.add_parser(
        "store",
        help="issue the control store's (etcd) certificates with the existing CA",
        description=(
            "Issue a server and peer certificate for every etcd --member (in DIR/etcd/), a "
            "store client certificate for every --node (DIR/nodes/NAME-store.pem) and, when "
            "missing, the store administrator's (CN=root, in the CA's directory)."
        ),
    )
    store.add_argument(
        "--dir", type=Path, required=True, help="directory holding ca.pem (required)"
    )
    _add_ca_flags(store)
    store.add_argument(
        "--member",
        dest="members",
        action="append",
        default=[],
        type=_node_ip,
        metavar="NAME=IP",
        help="an etcd member and the address its clients and peers dial (repeatable; "
        "default: none)",
    )
    store.add_argument(
        "--node",
        dest="nodes",
        action="append",
        default=[],
        metavar="NAME",
        help="a node whose agent reads the store (repeatable; default: none)",
    )
    _add_lifecycle_parsers(actions)


def _add_force_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--force",
        action="store_true",
        help="reissue certificates that already exist (default: keep every existing key and "
        "certificate, and say so)",
    )


def _add_lifecycle_parsers(actions: Any) -> None:
    renew = actions.add_parser(
        "renew",
        help="reissue every certificate in DIR (nodes, provider, operator) with the CA",
        description="Reissue every leaf certificate in DIR, keeping names and addresses. "
        "Agents pick up theirs on SIGHUP or when the files change, without a restart.",
    )
    renew.add_argument(
        "--dir", type=Path, required=True, help="directory holding ca.pem (required)"
    )
    _add_ca_flags(renew)
    revoke = actions.add_parser(
        "revoke",
        help="add a certificate to the revocation list agents check on every call",
        description="Append the certificate's serial to DIR/revoked.txt. Agents reload it "
        "on SIGHUP or when it changes, and refuse the certificate from then on.",
    )
    revoke.add_argument(
        "--dir", type=Path, required=True, help="directory holding ca.pem (required)"
    )
    which = revoke.add_mutually_exclusive_group(required=True)
    which.add_argument(
        "--cert",
        type=Path,
        metavar="FILE",
        help="the certificate file to revoke (required: this or --serial)",
    )
    which.add_argument(
        "--serial", metavar="HEX", help="the serial to revoke, in hex (required: this or --cert)"
    )


def _add_ca_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--ca-dir",
        type=Path,
        metavar="DIR",
        help="the CA's own directory, which holds its key (default: DIR-ca beside DIR); "
        "keep it off the machines that run pulumi, or offline",
    )
    parser.add_argument(
        "--ca-passphrase-file",
        type=Path,
        metavar="FILE",
        help="a file whose first line is the passphrase that encrypts the CA key (default: "
        "none, the key is stored unencrypted)",
    )
    parser.add_argument(
        "--days",
        type=int,
        default=LEAF_VALIDITY.days,
        metavar="DAYS",
        help=f"how long leaf certificates live, in days (default: {LEAF_VALIDITY.days})",
    )


def _passphrase(path: Path | None) -> bytes | None:
    if path is None:
        return None
    try:
        text = path.read_text().splitlines()
    except OSError as exc:
        raise RailnetError(f"--ca-passphrase-file {path} cannot be read: {exc.strerror}") from None
    if not text or not text[0]:
        raise RailnetError(f"--ca-passphrase-file {path} is empty")
    return text[0].encode()


def _days(days: int) -> datetime.timedelta:
    if days < 1:
        raise RailnetError(f"--days {days}: a certificate must live at least one day")
    return datetime.timedelta(days=days)


def _serial_of(cert: Path | None, serial: str | None) -> int:
    if cert is not None:
        try:
            return holder_of(cert.read_bytes()).serial
        except (OSError, ValueError) as exc:
            raise RailnetError(f"--cert {cert} is not a readable certificate ({exc})") from None
    try:
        return int(str(serial).lower().removeprefix("0x"), 16)
    except ValueError:
        raise RailnetError(f"--serial {serial!r} is not a serial in hex") from None


def run_certs(args: argparse.Namespace) -> int:
    """Run ``railnet certs init`` or ``railnet certs node``; return the exit code."""
    try:
        if args.certs_command == "init":
            node_ips: dict[str, list[str]] = {}
            for name, ip in args.node_ips:
                node_ips.setdefault(name, []).append(ip)
            result = write_cluster_tls(
                args.dir,
                list(args.nodes),
                node_ips,
                ca_dir=args.ca_dir,
                passphrase=_passphrase(args.ca_passphrase_file),
                validity=_days(args.days),
                force=args.force,
            )
        elif args.certs_command == "node":
            directory: Path = args.dir
            if not (directory / "ca.pem").exists():
                raise RailnetError(
                    f"no CA in {directory}; create one first with "
                    f"`railnet certs init --dir {directory} --node {args.node}`"
                )
            result = write_cluster_tls(
                directory,
                [args.node],
                {args.node: [_own_ip(args.node, ip) for ip in args.ips]},
                ca_dir=args.ca_dir,
                passphrase=_passphrase(args.ca_passphrase_file),
                validity=_days(args.days),
                force=args.force,
            )
        elif args.certs_command == "store":
            if not args.members and not args.nodes:
                raise RailnetError("give at least one --member NAME=IP or --node NAME")
            if not (args.dir / "ca.pem").exists():
                raise RailnetError(
                    f"no CA in {args.dir}; create one first with `railnet certs init`"
                )
            members: dict[str, list[str]] = {}
            for name, ip in args.members:
                members.setdefault(name, []).append(ip)
            ca_dir = args.ca_dir if args.ca_dir is not None else default_ca_dir(args.dir)
            written = write_store_tls(
                args.dir,
                members,
                list(args.nodes),
                ca_dir=ca_dir,
                passphrase=_passphrase(args.ca_passphrase_file),
                validity=_days(args.days),
            )
            for name, files in written.items():
                print(f"etcd member {name}: {files.cert}, {files.key}")
            for node in args.nodes:
                files = node_store_tls_files(args.dir, node)
                print(f"node {node} (store client): {files.cert}, {files.key}")
            admin = store_admin_tls_files(ca_dir)
            print(f"store administrator (CN=root): {admin.cert}, {admin.key}")
            return EXIT_OK
        elif args.certs_command == "renew":
            nodes = issued_nodes(args.dir)
            if not (args.dir / "ca.pem").exists():
                raise RailnetError(f"no CA in {args.dir}; nothing to renew")
            result = write_cluster_tls(
                args.dir,
                sorted(nodes),
                nodes,
                ca_dir=args.ca_dir,
                passphrase=_passphrase(args.ca_passphrase_file),
                validity=_days(args.days),
                renew=True,
            )
        elif args.certs_command == "revoke":
            serial = _serial_of(args.cert, args.serial)
            path = revoke(args.dir, serial)
            print(f"revoked {serial:x} in {path}; agents refuse it once they reload (SIGHUP)")
            return EXIT_OK
        else:
            print("railnet certs: choose a command: init or node", file=sys.stderr)
            return EXIT_BAD_INPUT
    except RailnetError as exc:
        print(f"railnet certs {args.certs_command}: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    _report(result)
    return EXIT_OK


def _node_ip(text: str) -> tuple[str, str]:
    name, sep, ip = text.partition("=")
    if not sep or not name or not ip:
        raise argparse.ArgumentTypeError(f"{text!r} is not NAME=IP, e.g. node-1=10.0.0.1")
    return name, ip


def _own_ip(node: str, text: str) -> str:
    name, sep, ip = text.rpartition("=")
    if sep and name != node:
        raise RailnetError(f"--node-ip {text!r} names node {name!r}, but this is --node {node}")
    return ip


def _report(result: ClusterTls) -> None:
    verb = "created" if result.ca_created else "reused"
    print(f"{verb} CA        {result.ca_cert} (key {result.ca_key})")
    for name, files in result.nodes.items():
        print(f"wrote node {name:<8} {files.cert} (key {files.key})")
    if result.provider_created:
        print(f"wrote provider   {result.provider.cert} (key {result.provider.key})")
    if result.operator is not None and "operator" not in result.kept:
        print(f"wrote operator   {result.operator.cert} (key {result.operator.key})")
    for what, doubt in result.kept.items():
        note = f": {doubt}; --force reissues it" if doubt else " (it exists; --force reissues it)"
        print(f"kept {what}{note}")
