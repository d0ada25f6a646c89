"""``railnet status`` judged and rendered: stale handshakes flagged, drift on the instance it
touches, DNS as counts, a stable order and a typed JSON form with every field present."""

from __future__ import annotations

import json
from typing import Any

import pytest

from railnet.core.status import SESSION_SECONDS, assess, status_lines, unhealthy

pytestmark = pytest.mark.unit

NOW = 1_800_000_000.0


def env(**extra: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "env_id": "e1",
        "project": "shop",
        "environment": "production",
        "generation": 3,
        "netns": "rn-node-1-e1",
        "listen_port": 51820,
        "public_key": "K1=",
        "peers": [
            {"node": "node-3", "public_key": "K3=", "endpoint": "198.18.0.3:51820",
             "last_handshake": int(NOW - 334), "rx_bytes": 2048, "tx_bytes": 10,
             "allowed_ips": ["10.0.0.4/32"]},
            {"node": "node-2", "public_key": "K2=", "endpoint": "198.18.0.2:51820",
             "last_handshake": int(NOW - 5), "rx_bytes": 0, "tx_bytes": 0, "allowed_ips": []},
            {"node": "node-4", "public_key": "K4=", "endpoint": "", "last_handshake": 0,
             "rx_bytes": 0, "tx_bytes": 0, "allowed_ips": []},
        ],
        "instances": [
            {"service": "db", "service_id": "s2", "index": 0, "netns": "rn-node-1-i2",
             "ipv4": "10.0.0.3", "ipv6": "fd00::3"},
            {"service": "api", "service_id": "s1", "index": 1, "netns": "rn-node-1-i1b",
             "ipv4": "10.0.0.5", "ipv6": "fd00::5"},
            {"service": "api", "service_id": "s1", "index": 0, "netns": "rn-node-1-i1a",
             "ipv4": "10.0.0.2", "ipv6": "fd00::2"},
        ],
        "records": [
            {"name": "api.railway.internal", "type": "AAAA", "value": "fd00::2", "ttl": 5},
            {"name": "api.railway.internal", "type": "A", "value": "10.0.0.2", "ttl": 5},
            {"name": "2.0.0.10.in-addr.arpa", "type": "PTR", "value": "0.api.railway.internal",
             "ttl": 5},
        ],
        "drift": [],
        "lost": [],
    }  # fmt: skip
    base.update(extra)
    return base


def report(*envs: dict[str, Any], error: str = "") -> list[dict[str, Any]]:
    nodes = [{"node": "node-1", "environments": list(envs)}]
    nodes.insert(0, {"node": "node-9", "error": error} if error else {"node": "node-0"})
    return assess(nodes, NOW)


def test_peers_show_their_handshake_age_and_stale_ones_are_flagged() -> None:
    peers = report(env())[1]["environments"][0]["peers"]
    assert [p["node"] for p in peers] == ["node-2", "node-3", "node-4"]  # sorted
    assert [p["stale"] for p in peers] == [False, True, True]
    assert peers[1]["handshake_age_seconds"] == 334.0 > SESSION_SECONDS
    assert peers[2]["handshake_age_seconds"] is None  # never: null, but present
    text = "\n".join(status_lines(report(env())))
    assert "peer node-2  198.18.0.2:51820  handshake 5s ago, rx 0 B, tx 0 B" in text
    assert "handshake 334s ago, STALE" in text and "rx 2.0 KiB" in text
    assert "peer node-4  -  no handshake yet" in text


def test_dns_shows_as_counts_and_verbose_lists_the_records() -> None:
    text = status_lines(report(env()))
    assert "    dns: 3 records for 2 names (A 1, AAAA 1, PTR 1); --verbose lists them" in text
    assert not any("in-addr.arpa" in line for line in text)
    verbose = status_lines(report(env()), verbose=True)
    assert "      2.0.0.10.in-addr.arpa PTR 0.api.railway.internal ttl 5" in verbose


def test_drift_is_a_problem_on_the_instance_it_touches_with_the_repair_that_comes() -> None:
    drifted = env(drift=["rewire instance rn-node-1-i2 (veth eth0 is missing)"])
    judged = report(drifted)
    node = judged[1]
    assert not node["healthy"] and node["problems"] == 1 and unhealthy(judged)
    health = {(i["service"], i["index"]): i["health"] for i in node["environments"][0]["instances"]}
    assert health == {("api", 0): "ok", ("api", 1): "ok", ("db", 0): "drift"}
    text = status_lines(judged)
    assert "node-1: 1 problem, 1 environment" in text
    assert "    instance db#0: 10.0.0.3, fd00::3: DRIFT" in text
    assert "    instance api#0: 10.0.0.2, fd00::2: ok" in text
    at = text.index("    DRIFT: the node differs from its document; the agent's next repair will:")
    assert text[at + 1] == "      - rewire instance rn-node-1-i2 (veth eth0 is missing)"
    assert not unhealthy(report(env()))


def test_a_silent_node_is_a_problem() -> None:
    judged = report(env(), error="node node-9 (unix:/x.sock) did not answer")
    assert [n["node"] for n in judged] == ["node-1", "node-9"]
    silent = next(n for n in judged if n["node"] == "node-9")
    assert silent == {
        "node": "node-9", "reachable": False, "error": "node node-9 (unix:/x.sock) did not answer",
        "store": "none", "healthy": False, "problems": 1, "environments": [],
    }  # fmt: skip
    assert unhealthy(judged)
    assert "node-9: UNREACHABLE: node node-9 (unix:/x.sock) did not answer" in status_lines(judged)


def test_the_order_is_stable_whatever_order_the_agents_answer_in() -> None:
    one = env()
    shuffled = env(
        peers=list(reversed(one["peers"])),
        instances=list(reversed(one["instances"])),
        records=list(reversed(one["records"])),
    )
    assert report(one) == report(shuffled)
    instances = report(one)[1]["environments"][0]["instances"]
    assert [(i["service"], i["index"]) for i in instances] == [("api", 0), ("api", 1), ("db", 0)]
    assert [n["node"] for n in report(one)] == ["node-0", "node-1"]


def test_json_has_typed_values_and_every_field_even_when_zero() -> None:
    minimal = {"env_id": "e1", "peers": [{"node": "node-2"}], "instances": [{"service": "api"}]}
    judged = json.loads(json.dumps(assess([{"node": "node-1", "environments": [minimal]}], NOW)))
    environment = judged[0]["environments"][0]
    assert environment["generation"] == 0 and environment["listen_port"] == 0
    assert environment["dns"] == {"records": 0, "names": 0, "by_type": {}}
    assert environment["drift"] == [] and environment["lost"] == [] and environment["records"] == []
    peer = environment["peers"][0]
    assert peer == {
        "node": "node-2", "public_key": "", "endpoint": "", "last_handshake": 0,
        "handshake_age_seconds": None, "stale": True, "rx_bytes": 0, "tx_bytes": 0,
        "allowed_ips": [],
    }  # fmt: skip
    instance = environment["instances"][0]
    assert instance["index"] == 0 and isinstance(instance["index"], int)
    assert instance["health"] == "ok" and instance["problems"] == []
    full = report(env())[1]["environments"][0]
    assert isinstance(full["generation"], int) and isinstance(full["peers"][0]["rx_bytes"], int)


def test_a_node_not_alive_in_the_store_is_a_problem_even_when_it_answers() -> None:
    alive = assess([{"node": "node-1", "environments": [], "store": "alive"}], NOW)
    assert alive[0]["store"] == "alive" and alive[0]["healthy"]
    lapsed = assess([{"node": "node-1", "environments": [], "store": "not alive"}], NOW)
    assert lapsed[0]["store"] == "not alive" and lapsed[0]["problems"] == 1
    assert unhealthy(lapsed)
    assert any("store: NOT ALIVE" in line for line in status_lines(lapsed))
    # Without a store there is nothing to judge.
    none = assess([{"node": "node-1", "environments": []}], NOW)
    assert none[0]["store"] == "none" and none[0]["healthy"]
