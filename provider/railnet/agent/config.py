"""The agent's configuration: one TOML file (``/etc/railnet/agent.toml``) holds every
setting the flags can give, and flags override it.

``SETTINGS`` is the one table of them: the file's keys, the flags (``--state-dir`` for
``state_dir``), their types, defaults and help. ``load_agent_config`` reads the file,
lays the flags given over it, checks every value as untrusted input (an error names the
key or flag, the value, and where it came from) and returns the ``AgentConfig`` the agent
runs with. The lab writes the same file for each of its nodes, so lab nodes start the way
real ones do.
"""

from __future__ import annotations

import ipaddress
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from railnet.agent.credentials import REVOKED_FILE
from railnet.core.errors import InvalidField, RailnetError
from railnet.core.names import check_netns_prefix, check_node_name
from railnet.pki.certs import TlsFiles
from railnet.store.etcd import StoreAddress

DEFAULT_CONFIG = Path("/etc/railnet/agent.toml")
DEFAULT_STATE_DIR = Path("/var/lib/railnet")
DEFAULT_SOCKET = Path("/run/railnet/agent.sock")
"""The local agent's unix socket: ``railnet exec`` on a node finds its agent there."""
LOG_LEVELS = ("debug", "info", "warning", "error")
LOG_FORMATS = ("text", "json")
WIREGUARD = ("auto", "kernel", "userspace")


@dataclass(frozen=True)
class Setting:
    key: str
    """The key in agent.toml; the flag is ``--`` and the key with ``-`` for ``_``."""
    kind: type
    """str, bool, float or list (of strings)."""
    default: Any
    help: str

    @property
    def flag(self) -> str:
        return "--" + self.key.replace("_", "-")


SETTINGS: tuple[Setting, ...] = (
    Setting("node", str, None, "this node's name, as the cluster file knows it (required)"),
    Setting(
        "listen",
        list,
        [f"unix:{DEFAULT_SOCKET}"],
        "gRPC address, host:port or unix:/PATH; repeat to listen on several",
    ),
    Setting("state_dir", str, str(DEFAULT_STATE_DIR), "documents and private keys (0700)"),
    Setting(
        "endpoint_host",
        str,
        None,
        "the underlay IP other nodes reach this node's WireGuard ports at (required)",
    ),
    Setting(
        "netns_prefix", str, None, "prefix of every namespace this agent makes (default: rn-NODE)"
    ),
    Setting("wireguard", str, "auto", "WireGuard backend: auto, kernel or userspace"),
    Setting("tls_ca", str, None, "the cluster CA certificate, PEM (required unless insecure)"),
    Setting("tls_cert", str, None, "this node's certificate, PEM (required unless insecure)"),
    Setting("tls_key", str, None, "this node's private key, PEM (required unless insecure)"),
    Setting(
        "tls_revoked",
        str,
        None,
        f"revoked certificate serials, hex, one a line (default: {REVOKED_FILE} beside tls_ca)",
    ),
    Setting("insecure", bool, False, "plaintext gRPC with no client authentication (never)"),
    Setting(
        "store_endpoint",
        list,
        [],
        "an etcd member of the control store, host:port, repeatable (default: none, this "
        "node reports nothing to a store)",
    ),
    Setting(
        "store_server_name",
        str,
        None,
        "the name the etcd members' certificates carry, when an endpoint is not that name "
        "(default: none)",
    ),
    Setting(
        "store_tls_cert",
        str,
        None,
        "this node's client certificate for the store, PEM (required with store_endpoint; "
        "default: none)",
    ),
    Setting(
        "store_tls_key",
        str,
        None,
        "its private key, PEM (required with store_endpoint; default: none)",
    ),
    Setting("dns", bool, True, "serve the environments' DNS views"),
    Setting(
        "dns_upstream",
        list,
        [],
        "where names outside the domain go, host:port, repeatable (default: none: such "
        "names get REFUSED)",
    ),
    Setting("reconcile_interval", float, 30.0, "seconds between full repairs, > 0"),
    Setting(
        "self_heal",
        bool,
        True,
        "repair drift as soon as the kernel reports it (netlink, wireguard-go exits, "
        "deleted namespaces, WireGuard peers read each second)",
    ),
    Setting("log_level", str, "info", "debug, info, warning or error"),
    Setting("log_format", str, "text", "text, or json: one JSON object a line"),
    Setting(
        "metrics_listen", str, None, "host:port for Prometheus metrics (default: none, no endpoint)"
    ),
)
BY_KEY = {s.key: s for s in SETTINGS}


@dataclass(frozen=True)
class AgentConfig:
    """Everything one node's agent runs with."""

    node: str
    """This node's name, as the cluster file knows it."""
    listen: tuple[str, ...]
    """gRPC addresses: ``host:port`` or ``unix:PATH``."""
    state_dir: Path
    """Stored documents and private keys."""
    endpoint_host: str
    """The underlay address other nodes reach this node's WireGuard sockets at."""
    tls: TlsFiles | None
    """Mutual TLS material; ``None`` serves plaintext (``--insecure``)."""
    netns_prefix: str | None = None
    """Prefix of every namespace this agent makes; ``rn-<node>`` when unset."""
    wireguard: str = "auto"
    """``auto``, ``kernel`` or ``userspace``."""
    dns: bool = True
    """Serve the environments' DNS views."""
    dns_upstreams: tuple[str, ...] = ()
    """Where names outside the private domain are forwarded (``host:port``)."""
    reconcile_interval: float = 30.0
    """Seconds between full repairs."""
    self_heal: bool = True
    """Repair drift when the kernel reports it; off, only the periodic repair does."""
    tls_revoked: Path | None = None
    """The revocation list (serials, hex); checked on every call, reread with the rest."""
    log_level: str = "info"
    log_format: str = "text"
    """``text`` or ``json`` (one object a line, for log shippers)."""
    metrics_listen: tuple[str, int] | None = None
    """Where the Prometheus endpoint listens; ``None``: no endpoint."""
    store: StoreAddress | None = None
    """The control store and this node's client certificate for it; ``None``: none."""


class ConfigError(InvalidField):
    """A setting of the agent is missing or wrong."""


def read_config_file(path: Path) -> dict[str, Any]:
    """The settings in ``path``; an unknown key or a wrong type names the key and file."""
    try:
        raw = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise RailnetError(
            f"config file {path} does not exist; write one with 'railnet node install'"
        ) from None
    except IsADirectoryError:
        raise RailnetError(f"config file {path} is a directory, not a TOML file") from None
    except OSError as exc:
        raise RailnetError(f"cannot read config file {path}: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise RailnetError(f"config file {path} is not valid TOML: {exc}") from None
    found: dict[str, Any] = {}
    for key, value in raw.items():
        setting = BY_KEY.get(key)
        if setting is None:
            known = ", ".join(sorted(BY_KEY))
            raise ConfigError(key, value, f"is not a setting (in {path}); known: {known}")
        found[key] = _typed(setting, value, f"{key} (in {path})")
    return found


def _typed(setting: Setting, value: Any, where: str) -> Any:
    if setting.kind is list:
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise ConfigError(where, value, "must be a list of strings")
        return list(value)
    if setting.kind is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(where, value, "must be a number")
        return float(value)
    if setting.kind is bool:
        if not isinstance(value, bool):
            raise ConfigError(where, value, "must be true or false")
        return value
    if not isinstance(value, str):
        raise ConfigError(where, value, "must be a string")
    return value


def load_agent_config(config_file: Path | None, flags: Mapping[str, Any]) -> AgentConfig:
    """The agent's configuration: defaults, then ``config_file`` (when given), then the
    ``flags`` given (keys of ``SETTINGS``; None or an empty list: not given)."""
    values: dict[str, Any] = {s.key: s.default for s in SETTINGS}
    origin: dict[str, str] = {s.key: "the default" for s in SETTINGS}
    path = config_file
    if path is not None:
        for key, value in read_config_file(path).items():
            values[key] = value
            origin[key] = str(path)
    for key, value in flags.items():
        if value is None or (isinstance(value, list) and not value):
            continue
        values[key] = value
        origin[key] = BY_KEY[key].flag
    return _checked(values, origin)


def _name(key: str, origin: Mapping[str, str]) -> str:
    where = origin[key]
    return BY_KEY[key].flag if where.startswith("--") else f"{key} (from {where})"


def _checked(values: Mapping[str, Any], origin: Mapping[str, str]) -> AgentConfig:
    def need(key: str) -> Any:
        value = values[key]
        if value in (None, ""):
            raise ConfigError(
                BY_KEY[key].flag,
                value,
                f"is required: give it as a flag or as '{key}' in the config file",
            )
        return value

    node = check_node_name(_name("node", origin), need("node"))
    if values["netns_prefix"] is not None:
        check_netns_prefix(_name("netns_prefix", origin), values["netns_prefix"])
    listen = tuple(values["listen"])
    if not listen:
        raise ConfigError(_name("listen", origin), listen, "needs at least one address")
    for address in listen:
        check_listen_address(_name("listen", origin), address)
    state_dir = Path(values["state_dir"]).expanduser()
    if state_dir.exists() and not state_dir.is_dir():
        raise ConfigError(_name("state_dir", origin), str(state_dir), "is a file, not a directory")
    endpoint = need("endpoint_host")
    try:
        ipaddress.ip_address(endpoint)
    except ValueError:
        raise ConfigError(
            _name("endpoint_host", origin), endpoint, "must be an IP address (the underlay's)"
        ) from None
    for key, choices in (
        ("wireguard", WIREGUARD),
        ("log_level", LOG_LEVELS),
        ("log_format", LOG_FORMATS),
    ):
        if values[key] not in choices:
            raise ConfigError(
                _name(key, origin), values[key], f"must be one of {', '.join(choices)}"
            )
    interval = float(values["reconcile_interval"])
    if not interval > 0 or interval == float("inf"):
        raise ConfigError(
            _name("reconcile_interval", origin), values["reconcile_interval"], "must be seconds > 0"
        )
    for upstream in values["dns_upstream"]:
        if not isinstance(upstream, str) or not upstream:
            raise ConfigError(_name("dns_upstream", origin), upstream, "must be host:port")
        from railnet.agent.dns import Upstream  # its parser is the resolver's own

        Upstream.parse(_name("dns_upstream", origin), upstream)
    metrics = None
    if values["metrics_listen"]:
        metrics = check_host_port(_name("metrics_listen", origin), values["metrics_listen"])
    tls = None
    revoked = None
    if not values["insecure"]:
        missing = [BY_KEY[k].flag for k in ("tls_ca", "tls_cert", "tls_key") if not values[k]]
        if missing:
            raise RailnetError(
                f"mutual TLS needs {', '.join(missing)} (or tls_ca, tls_cert, tls_key in the "
                "config file; mint them with 'railnet certs'); --insecure serves plaintext"
            )
        tls = TlsFiles(Path(values["tls_ca"]), Path(values["tls_cert"]), Path(values["tls_key"]))
        revoked = Path(values["tls_revoked"] or tls.ca.parent / REVOKED_FILE)
    store = None
    if values["store_endpoint"]:
        name = _name("store_endpoint", origin)
        endpoints = tuple(values["store_endpoint"])
        for member in endpoints:
            if not member.startswith("unix:"):
                check_host_port(name, member)
            elif not member[5:].startswith("/"):
                raise ConfigError(name, member, "a unix socket needs an absolute path")
        if tls is None:
            raise ConfigError(name, list(endpoints), "needs mutual TLS (tls_ca): not --insecure")
        missing = [BY_KEY[k].flag for k in ("store_tls_cert", "store_tls_key") if not values[k]]
        if missing:
            raise ConfigError(name, list(endpoints), f"needs {', '.join(missing)} as well")
        store = StoreAddress(
            endpoints,
            TlsFiles(tls.ca, Path(values["store_tls_cert"]), Path(values["store_tls_key"])),
            values["store_server_name"] or "",
        )
    return AgentConfig(
        node=node,
        listen=listen,
        state_dir=state_dir,
        endpoint_host=endpoint,
        tls=tls,
        netns_prefix=values["netns_prefix"],
        wireguard=values["wireguard"],
        dns=bool(values["dns"]),
        dns_upstreams=tuple(values["dns_upstream"]),
        reconcile_interval=interval,
        self_heal=bool(values["self_heal"]),
        tls_revoked=revoked,
        log_level=values["log_level"],
        log_format=values["log_format"],
        metrics_listen=metrics,
        store=store,
    )


def check_host_port(name: str, text: str) -> tuple[str, int]:
    """``HOST:PORT`` or ``[IPv6]:PORT`` → (host, port); an error names ``name``."""
    host, sep, port = text.rpartition(":")
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigError(name, text, "must be HOST:PORT with a port 1-65535")
    return host, int(port)


def check_listen_address(name: str, text: str) -> str:
    """A gRPC listen address: ``unix:ABSOLUTE_PATH`` or ``HOST:PORT`` (port 0 picks one)."""
    if text.startswith("unix:"):
        if not text[5:].startswith("/"):
            raise ConfigError(name, text, "a unix socket needs an absolute path: unix:/PATH")
        return text
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) < 65536:
        raise ConfigError(name, text, "must be HOST:PORT or unix:/PATH")
    return text


def render_config(values: Mapping[str, Any]) -> str:
    """An agent.toml: every setting, the given ones set, the others commented out with
    their defaults, each with its help."""
    lines = [
        "# railnet agent configuration. Every key is also a flag of 'railnet agent'",
        "# (state_dir is --state-dir); flags override this file.",
        "",
    ]
    for s in SETTINGS:
        lines.append(f"# {s.help}")
        value = values.get(s.key)
        if value is None:
            if s.default is None:
                lines.append(f"# {s.key} = ")
            else:
                lines.append(f"# {s.key} = {_toml(s.default)}")
        else:
            lines.append(f"{s.key} = {_toml(value)}")
        lines.append("")
    return "\n".join(lines)


def _toml(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    text = str(value).replace("\\", "\\\\").replace('"', '\\"')
    return f'"{text}"'
