"""Key rotation: the longest pause of a TCP stream while an environment's keys rotate.

A two-node lab; a sender in a service instance on node-1 writes a numbered 64-byte chunk
every 10 ms over TCP (IPv6) to a receiver in an instance on node-2
(``tests/linux/stream.py``), which records the longest time between two arrivals. While it
flows, the environment gets a new ``key_rotation`` token, again and again:

* **deploy**: ``EnvironmentDeployer.apply`` as the providers call it: every node stages a
  key, and the next document goes to both nodes in parallel;
* **skewed**: the same document, but one node applies it ``SKEW`` seconds after the other
  (a slow or distant node), alternating which goes first. Between the two applies the node
  that went first speaks only its new key and the other only its old one, so the stream
  stops; it resumes when the second node's handshake (started the moment it applies)
  completes, not when WireGuard's retry (5 s) comes round.

Every round checks that the connection never broke (each chunk arrived, in order) and
that the keys changed on both nodes.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from bench.common import (
    BenchError,
    Result,
    check_prerequisites,
    finish,
    lab_cluster,
    median,
    say,
)
from railnet.control.deployer import EnvironmentDeployer
from railnet.control.inspect import Target, find_instance
from railnet.core.desired import EnvironmentSpec, ServiceSpec, build_document
from railnet.core.document import EnvironmentDocument
from railnet.lab.local_cluster import Lab

NAME = "Key rotation"
TARGET_SECONDS = 1.0
TARGET = f"longest pause of a deployed rotation < {TARGET_SECONDS:g} s"
STREAM = Path(__file__).resolve().parent.parent / "tests" / "linux" / "stream.py"
PORT = 7960
SKEW = 0.5
"""Seconds between the two nodes' applies in the skewed rounds."""
SETTLE = 1.0
"""Seconds of stream before and after each rotation."""
SPEC = EnvironmentSpec(
    "bench",
    "rotation",
    services=(ServiceSpec("sender", ("node-1",)), ServiceSpec("receiver", ("node-2",))),
)


@dataclass(frozen=True)
class Config:
    rounds: int
    """Rotations per way (deploy, skewed)."""


FULL = Config(rounds=5)
QUICK = Config(rounds=2)


@dataclass(frozen=True)
class Round:
    way: str
    index: int
    longest_pause: float
    """Seconds: the longest time between two chunks in the round's window."""
    apply_seconds: float
    """How long the rotation took to apply, end to end."""


def _public_keys(doc: EnvironmentDocument) -> dict[str, str]:
    return {n.name: n.public_key for n in doc.nodes}


def _skewed(lab: Lab, spec: EnvironmentSpec, previous: EnvironmentDocument, first: str) -> None:
    """Rotate as the deployer does, but apply to ``first`` ``SKEW`` s before the other."""
    nodes = {n.name: n for n in lab.nodes()}
    identities = {}
    for name, node in nodes.items():
        with lab.client(node) as client:
            identities[name] = client.ensure(spec.id, spec.key_rotation)
    doc = build_document(spec, previous, identities, now=int(time.time()))
    order = [first, *(n for n in sorted(nodes) if n != first)]
    for i, name in enumerate(order):
        if i:
            time.sleep(SKEW)
        with lab.client(nodes[name]) as client:
            client.apply(doc.to_json(), previous.generation)


def _held(lab: Lab, env_id: str) -> EnvironmentDocument:
    node = lab.nodes()[0]
    with lab.client(node) as client:
        text = client.document(env_id)
    if text is None:
        raise BenchError(f"{node.name} holds no document for {env_id}")
    return EnvironmentDocument.from_json(text)


def _stream_round(
    sender_ns: str, receiver_ns: str, host: str, rotate: Callable[[], object]
) -> tuple[float, float]:
    """Run the stream around one rotation; (longest pause, seconds the rotation took)."""
    receiver = subprocess.Popen(
        ["ip", "netns", "exec", receiver_ns, sys.executable, str(STREAM), "receive", str(PORT)],
        stdout=subprocess.PIPE,
        text=True,
    )
    sender = None
    try:
        assert receiver.stdout is not None
        if receiver.stdout.readline().strip() != "ready":
            raise BenchError("the stream receiver did not start")
        sender = subprocess.Popen(
            ["ip", "netns", "exec", sender_ns, sys.executable, str(STREAM), "send", host,
             str(PORT)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )  # fmt: skip
        assert sender.stdout is not None
        if sender.stdout.readline().strip() != "connected":
            raise BenchError("the stream sender did not connect")
        time.sleep(SETTLE)
        started = time.monotonic()
        rotate()
        took = time.monotonic() - started
        time.sleep(SETTLE)
        sent, _ = sender.communicate(timeout=60)
        received, _ = receiver.communicate(timeout=60)
    finally:
        for proc in (sender, receiver):
            if proc is not None and proc.poll() is None:
                proc.kill()
                proc.wait()
    result = json.loads(received.strip().splitlines()[-1])
    if sender.returncode != 0 or not (result["ended"] and result["in_order"]):
        raise BenchError(f"the stream broke during a rotation: {result}; sender: {sent.strip()}")
    return float(result["longest_pause"]), took


def measure(config: Config, *, dns: bool) -> Result:
    started = time.monotonic()
    rounds: list[Round] = []
    with lab_cluster(2, dns=dns) as (lab, cluster):
        deployer = EnvironmentDeployer(cluster)
        doc = deployer.apply(SPEC).document
        receiver = doc.service("receiver")
        assert receiver is not None
        host = receiver.instances[0].ipv6
        _, sender_ns = find_instance(cluster, Target("bench", "rotation", "sender", 0))
        _, receiver_ns = find_instance(cluster, Target("bench", "rotation", "receiver", 0))
        token = 0
        for way in ("deploy", "skewed"):
            for i in range(config.rounds):
                token += 1
                spec = dataclasses.replace(SPEC, key_rotation=f"bench-{token}")
                before = _held(lab, SPEC.id)
                rotate: Callable[[], object] = (
                    functools.partial(deployer.apply, spec)
                    if way == "deploy"
                    else functools.partial(_skewed, lab, spec, before, ("node-1", "node-2")[i % 2])
                )
                pause, took = _stream_round(sender_ns, receiver_ns, host, rotate)
                after = _held(lab, SPEC.id)
                old, new = _public_keys(before), _public_keys(after)
                if after.key_rotation != spec.key_rotation or any(old[n] == new[n] for n in old):
                    raise BenchError(f"round {way} {i}: the keys did not rotate")
                rounds.append(Round(way, i + 1, pause, took))
                say(f"rotation: {way} round {i + 1}: longest pause {pause * 1000:.0f} ms")
        deployer.close()

    by_way = {w: [r for r in rounds if r.way == w] for w in ("deploy", "skewed")}
    deploy_max = max(r.longest_pause for r in by_way["deploy"])
    skewed_max = max(r.longest_pause for r in by_way["skewed"])
    body = [
        "The longest pause of one TCP stream between service instances on two lab nodes "
        "while the environment's WireGuard keys rotate (a new `key_rotation` token). The "
        "sender writes a numbered 64-byte chunk every 10 ms; the receiver records the "
        "longest time between two arrivals in a window of "
        f"{SETTLE:g} s before the rotation, the rotation, and {SETTLE:g} s after it (so "
        "10 ms is no pause at all). **deploy** is `EnvironmentDeployer.apply`, as the "
        "providers run it (the document reaches both nodes in parallel); **skewed** applies "
        f"the same document to one node {SKEW:g} s after the other, alternating which node "
        "goes first, so the stream must stop until the second node has its new key. Every "
        "round also checks that the connection never broke (all chunks, in order) and that "
        "both nodes' keys changed.",
        "",
        "```",
        f"python -m bench.rotation{'' if config == FULL else ' --quick'}",
        "# receiver: ip netns exec <receiver instance> python tests/linux/stream.py receive "
        f"{PORT}",
        "# sender:   ip netns exec <sender instance> python tests/linux/stream.py send "
        f"<receiver IPv6> {PORT}",
        "```",
        "",
        "| way | round | longest pause (ms) | rotation applied in (ms) |",
        "|---|---:|---:|---:|",
    ]
    body += [
        f"| {r.way} | {r.index} | {r.longest_pause * 1000:.0f} | {r.apply_seconds * 1000:.0f} |"
        for r in rounds
    ]
    body += [
        "",
        f"**Longest pause: {deploy_max * 1000:.0f} ms when deployed** (median "
        f"{median([r.longest_pause for r in by_way['deploy']]) * 1000:.0f} ms), "
        f"{skewed_max * 1000:.0f} ms with a {SKEW * 1000:.0f} ms skew between the nodes "
        f"(target for the deployed rotation < {TARGET_SECONDS:g} s): "
        f"{'**pass**' if deploy_max < TARGET_SECONDS else '**FAIL**'}. The deployer applies a "
        "rotation to one node after another, and the node that applies second starts its "
        "handshake at once (`SetPeer.handshake`), so no rotation waits for WireGuard's 5 s "
        "handshake retry (without those two, rounds of 5.1-5.2 s showed up here). The skewed "
        "pause is the skew, plus TCP's retransmission back-off for the segments lost while "
        "the nodes disagreed (up to about 0.5 s more).",
    ]
    return Result(
        name=NAME,
        summary=(
            f"longest pause {deploy_max * 1000:.0f} ms deployed, {skewed_max * 1000:.0f} ms "
            f"with a {SKEW * 1000:.0f} ms skew ({len(rounds)} rotations, stream unbroken)"
        ),
        target=TARGET,
        passed=deploy_max < TARGET_SECONDS,
        body=body,
        seconds=time.monotonic() - started,
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer rotations")
    parser.add_argument("--no-dns", action="store_true", help="start the lab without DNS")
    args = parser.parse_args()
    check_prerequisites()
    result = measure(QUICK if args.quick else FULL, dns=not args.no_dns)
    return finish(result)


if __name__ == "__main__":
    raise SystemExit(main())
