"""``railnet status``: what each node says, judged and rendered for an operator.

``assess`` takes the plain, typed form of every node's Status reply (``railnet.control.
inspect.status_report`` builds it) and adds the verdicts: a peer's handshake age and whether
it is stale, each instance's health, the DNS record counts, whether the node is healthy. It
sorts everything, so two runs print the same order. The result is the ``--json`` contract:
every field is always present with its type (docs/operating.md lists them).
``status_lines`` renders it for people.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

SESSION_SECONDS = 180
"""WireGuard's Reject-After-Time: a session older than this carries no traffic, and the next
packet starts a new handshake. A peer whose last handshake is older has no session: idle
(railnet sets no persistent keepalive) or unreachable."""


def assess(nodes: list[dict[str, Any]], now: float) -> list[dict[str, Any]]:
    """The judged report, sorted: nodes by name, environments by project/environment,
    peers by node, instances by service and index, records by name, type and value."""
    return [_node(n, now) for n in sorted(nodes, key=lambda n: str(n["node"]))]


STORE_STATES = ("alive", "not alive", "none")
"""A node's liveness in the control store: its lease-bound key is there, is not (its agent,
machine or link to etcd is gone, or its reports are failing), or the cluster has no store."""


def _node(node: dict[str, Any], now: float) -> dict[str, Any]:
    envs = [_environment(e, now) for e in node.get("environments", [])]
    envs.sort(key=lambda e: (e["project"], e["environment"], e["env_id"]))
    reachable = not node.get("error")
    store = str(node.get("store") or "none")
    if store not in STORE_STATES:
        store = "none"
    problems = 0 if reachable else 1
    problems += sum(len(e["drift"]) for e in envs)
    # An agent that answers but is not alive in the store looks dead to every deploy.
    problems += 1 if store == "not alive" and reachable else 0
    return {
        "node": str(node["node"]),
        "reachable": reachable,
        "error": str(node.get("error") or ""),
        "store": store,
        "healthy": problems == 0,
        "problems": problems,
        "environments": envs,
    }


def _environment(env: dict[str, Any], now: float) -> dict[str, Any]:
    drift = [str(d) for d in env.get("drift", [])]
    lost = [str(line) for line in env.get("lost", [])]
    peers = [_peer(p, now) for p in env.get("peers", [])]
    peers.sort(key=lambda p: (p["node"], p["public_key"]))
    instances = [_instance(i, drift, lost) for i in env.get("instances", [])]
    instances.sort(key=lambda i: (i["service"], i["index"]))
    records = sorted(
        (
            {
                "name": str(r["name"]),
                "type": str(r["type"]),
                "value": str(r["value"]),
                "ttl": int(r.get("ttl", 0)),
            }
            for r in env.get("records", [])
        ),
        key=lambda r: (r["name"], r["type"], r["value"]),
    )
    by_type = Counter(r["type"] for r in records)
    return {
        "env_id": str(env["env_id"]),
        "project": str(env.get("project", "")),
        "environment": str(env.get("environment", "")),
        "generation": int(env.get("generation", 0)),
        "netns": str(env.get("netns", "")),
        "listen_port": int(env.get("listen_port", 0)),
        "public_key": str(env.get("public_key", "")),
        "healthy": not drift,
        "peers": peers,
        "instances": instances,
        "dns": {
            "records": len(records),
            "names": len({r["name"] for r in records}),
            "by_type": dict(sorted(by_type.items())),
        },
        "records": records,
        "drift": drift,
        "lost": lost,
    }


def _peer(peer: dict[str, Any], now: float) -> dict[str, Any]:
    last = int(peer.get("last_handshake", 0))
    age = max(0.0, now - last) if last else None
    return {
        "node": str(peer.get("node", "")),
        "public_key": str(peer.get("public_key", "")),
        "endpoint": str(peer.get("endpoint", "")),
        "last_handshake": last,
        "handshake_age_seconds": None if age is None else round(age, 1),
        "stale": age is None or age > SESSION_SECONDS,
        "rx_bytes": int(peer.get("rx_bytes", 0)),
        "tx_bytes": int(peer.get("tx_bytes", 0)),
        "allowed_ips": sorted(str(a) for a in peer.get("allowed_ips", [])),
    }


def _instance(inst: dict[str, Any], drift: list[str], lost: list[str]) -> dict[str, Any]:
    netns = str(inst.get("netns", ""))
    mine = [d for d in drift if netns and netns in d]
    gone = [line for line in lost if netns and netns in line]
    return {
        "service": str(inst["service"]),
        "service_id": str(inst.get("service_id", "")),
        "index": int(inst.get("index", 0)),
        "netns": netns,
        "ipv4": str(inst.get("ipv4", "")),
        "ipv6": str(inst.get("ipv6", "")),
        "health": "drift" if mine else ("lost" if gone else "ok"),
        "problems": mine + gone,
    }


def unhealthy(report: list[dict[str, Any]]) -> bool:
    """Whether ``railnet status`` exits 1: a node did not answer or has drift."""
    return any(not n["healthy"] for n in report)


def plural(count: int, word: str) -> str:
    return f"{count} {word}" + ("" if count == 1 else "s")


def size(count: int) -> str:
    value = float(count)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{count} B"


def status_lines(report: list[dict[str, Any]], verbose: bool = False) -> list[str]:
    lines: list[str] = []
    for node in report:
        if not node["reachable"]:
            lines.append(f"{node['node']}: UNREACHABLE: {node['error']}")
            if node["store"] == "alive":
                lines.append("  store: alive (its agent reports to the store, but not to you)")
            continue
        verdict = "healthy" if node["healthy"] else plural(node["problems"], "problem")
        count = plural(len(node["environments"]), "environment")
        lines.append(f"{node['node']}: {verdict}, {count}")
        if node["store"] == "not alive":
            lines.append(
                "  store: NOT ALIVE: no liveness report in the control store; its agent "
                "cannot reach etcd (see its log)"
            )
        for env in node["environments"]:
            lines += _environment_lines(env, verbose)
    healthy = sum(1 for n in report if n["healthy"])
    lines.append(f"{plural(len(report), 'node')}: {healthy} healthy, {len(report) - healthy} not")
    return lines


def _environment_lines(env: dict[str, Any], verbose: bool) -> list[str]:
    name = f"{env['project'] or '?'}/{env['environment'] or '?'}"
    state = "healthy" if env["healthy"] else f"DRIFT ({len(env['drift'])})"
    lines = [
        f"  {name} ({env['env_id']}): generation {env['generation']}, "
        f"port {env['listen_port']}, {state}"
    ]
    width = max((len(p["node"]) for p in env["peers"]), default=0)
    for peer in env["peers"]:
        age = peer["handshake_age_seconds"]
        if age is None:
            shake = "no handshake yet"
        elif peer["stale"]:
            shake = (
                f"handshake {age:.0f}s ago, STALE (no session for over {SESSION_SECONDS}s: "
                f"idle, or {peer['node']} unreachable)"
            )
        else:
            shake = f"handshake {age:.0f}s ago"
        lines.append(
            f"    peer {peer['node']:<{width}}  {peer['endpoint'] or '-'}  {shake}, "
            f"rx {size(peer['rx_bytes'])}, tx {size(peer['tx_bytes'])}"
        )
    for inst in env["instances"]:
        addrs = ", ".join(a for a in (inst["ipv4"], inst["ipv6"]) if a)
        health = {"ok": "ok", "drift": "DRIFT", "lost": "LOST PROCESSES"}[inst["health"]]
        lines.append(f"    instance {inst['service']}#{inst['index']}: {addrs}: {health}")
    dns = env["dns"]
    kinds = ", ".join(f"{t} {n}" for t, n in dns["by_type"].items())
    hint = "" if verbose or not dns["records"] else "; --verbose lists them"
    lines.append(
        f"    dns: {plural(dns['records'], 'record')} for {plural(dns['names'], 'name')}"
        + (f" ({kinds})" if kinds else "")
        + hint
    )
    if verbose:
        for rec in env["records"]:
            lines.append(f"      {rec['name']} {rec['type']} {rec['value']} ttl {rec['ttl']}")
    if env["drift"]:
        lines.append("    DRIFT: the node differs from its document; the agent's next repair will:")
        lines += [f"      - {d}" for d in env["drift"]]
    for line in env["lost"]:
        lines.append(f"    lost: {line}")
    return lines
