"""Write an environment's desired state to every node involved, with compare-and-set.

``EnvironmentDeployer.apply(spec)`` surveys the nodes that hold the environment, builds the
next document in the pure core, ensures the environment on every new hosting node, applies
the document to all hosting nodes and keepers in parallel, and removes the environment from
nodes that no longer host or keep it. A conflict (another writer got there first) restarts
the round from the survey, after a jittered back-off. When it returns, every hosting node
has applied the document: names resolve and instances connect.

Only the nodes that host or keep the environment before or after the change are asked. The
keepers (``railnet.core.desired.keepers_of``, a few nodes chosen by rendezvous hash of the
environment) hold a copy of the document whatever they host, so the survey always has a
place to start, even for a service placed on nodes the environment never had; a node
outside the environment is never asked and may be down without harm. A hosting node that
does not answer fails the run, by name and address, after every other node has applied;
the next run converges it. A keeper that hosts nothing and does not answer is skipped. A
node the change leaves while it does not answer is recorded in the document (``leaving``)
and cleaned up by a later run.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TypeVar

import grpc

from railnet.control.client import AgentClient, AgentError, agent_address
from railnet.control.cluster import Cluster, store_address
from railnet.control.stored import DocumentConflict, Stored, StoredDocuments
from railnet.core.delta import DocumentDelta
from railnet.core.desired import (
    EnvironmentSpec,
    build_document,
    drain,
    keepers_of,
    spec_from_document,
)
from railnet.core.document import EnvironmentDocument, common_format
from railnet.core.errors import AgentUnreachable, RailnetError
from railnet.core.names import check_object_id, environment_id
from railnet.store.etcd import EtcdStore

log = logging.getLogger("railnet.control.deployer")
T = TypeVar("T")
MAX_ROUNDS = 8
BACKOFF_BASE = 0.05
"""Seconds before the first retry after a conflict; doubles each round, with full jitter."""
PARALLEL_CALLS = 32
"""Calls in flight at once, over every round of a deployer (environments deployed in
parallel share them)."""

_env_locks: dict[str, threading.Lock] = {}
_env_locks_guard = threading.Lock()


@contextmanager
def environment_lock(env_id: str) -> Iterator[None]:
    """One writer per environment in this process; other processes meet the agents' CAS."""
    with _env_locks_guard:
        lock = _env_locks.setdefault(env_id, threading.Lock())
    with lock:
        yield


@dataclass(frozen=True)
class Survey:
    """What the nodes asked about one environment said, and who did not answer."""

    held: dict[str, EnvironmentDocument | None]
    """Per node that answered, the document it holds (None: nothing)."""
    unreachable: dict[str, AgentUnreachable] = field(default_factory=dict)

    @property
    def latest(self) -> EnvironmentDocument | None:
        return newest(self.held)

    def involved(self) -> set[str]:
        """Every node any held document names: hosting, keeping, or still to be cleaned
        up."""
        found: set[str] = set()
        for doc in self.held.values():
            if doc is not None:
                found.update(n.name for n in doc.nodes)
                found.update(doc.leaving)
                found.update(doc.keepers)
        return found

    def hosted(self) -> set[str]:
        """Every node any held document has (or had, ``leaving``) build the environment."""
        found: set[str] = set()
        for doc in self.held.values():
            if doc is not None:
                found.update(n.name for n in doc.nodes)
                found.update(doc.leaving)
        return found

    def silent(self, involved_only: bool = False) -> list[str]:
        """The nodes that did not answer, as ``NAME (ADDRESS)``; with ``involved_only``,
        only those the documents found name."""
        involved = self.involved() if involved_only else None
        return [
            f"{node} ({exc.address})"
            for node, exc in sorted(self.unreachable.items())
            if involved is None or node in involved
        ]

    def silent_nodes(self, involved_only: bool = False) -> list[str]:
        """The names of the nodes that did not answer, for Pulumi state. Agent addresses
        come from the cluster setting, which may be secret config, and the provider cannot
        tell (it never receives secrets): they stay in errors and logs, out of outputs."""
        return [entry.split(" (", 1)[0] for entry in self.silent(involved_only)]


def newest(held: dict[str, EnvironmentDocument | None]) -> EnvironmentDocument | None:
    """The highest generation among the documents nodes hold."""
    docs = [d for d in held.values() if d is not None]
    return max(docs, key=lambda d: d.generation) if docs else None


@dataclass(frozen=True)
class Applied:
    document: EnvironmentDocument
    changes: dict[str, list[str]]
    """Per node, what the apply changed there."""
    removed_from: tuple[str, ...]


class EnvironmentDeployer:
    def __init__(self, cluster: Cluster, timeout: float = 60.0) -> None:
        self.cluster = cluster
        self.timeout = timeout
        self._clients: dict[str, AgentClient] = {}
        self._clients_lock = threading.Lock()
        self._hosting: dict[str, tuple[str, ...]] = {}
        """Per environment, the nodes this deployer last saw involved: the next survey's
        starting point, so deploys in one run do not scan the cluster again."""
        self._known: dict[str, EnvironmentDocument] = {}
        """Per environment, the newest document this deployer saw or wrote: nodes that hold
        it say so instead of sending it again, and changes to it travel as deltas."""
        self._takes_deltas: dict[str, bool] = {}
        """Per node, whether its agent said (by a digest) that it accepts deltas."""
        self._delta_version: dict[str, int] = {}
        """Per node, the deltas its agent reads (``GetDocumentResponse.delta_version``)."""
        self._pool: ThreadPoolExecutor | None = None
        """The threads that ask the nodes in parallel, started once: starting threads for
        every round costs more than a small round's calls."""
        self._documents: StoredDocuments | None = None
        """The documents in the control store (a cluster with a store), opened on first
        use."""
        self._documents_here = False
        """Seen once: the documents live in the store (it never goes back)."""

    def __enter__(self) -> EnvironmentDeployer:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def close(self) -> None:
        with self._clients_lock:
            for client in self._clients.values():
                client.close()
            self._clients.clear()
            pool, self._pool = self._pool, None
            documents, self._documents = self._documents, None
        if pool is not None:
            pool.shutdown(wait=True)
        if documents is not None:
            documents.store.close()

    def stored_documents(self) -> StoredDocuments | None:
        """The store's documents; None for a cluster without a store."""
        if self.cluster.store is None:
            return None
        with self._clients_lock:
            if self._documents is None:
                self._documents = StoredDocuments(EtcdStore(store_address(self.cluster)))
            return self._documents

    def stored(self, env_id: str) -> Stored | None:
        """What the store holds of the environment (None: the cluster has no store)."""
        documents = self.stored_documents()
        return None if documents is None else documents.read(env_id)

    def documents_here(self) -> bool:
        """Whether the store is the authority on documents (see ``DOCUMENTS_HERE``)."""
        documents = self.stored_documents()
        if documents is None:
            return False
        if not self._documents_here:
            self._documents_here = documents.documents_here()
        return self._documents_here

    def current(self, env_id: str, hints: Iterable[str] = ()) -> EnvironmentDocument | None:
        """The environment's document: the store's, once the documents live there; before
        that (or without a store), the newest a node holds."""
        stored = self.stored(env_id)
        if stored is not None and (stored.document is not None or self.documents_here()):
            return stored.document
        return self.survey(env_id, hints).latest

    def _client(self, node: str) -> AgentClient:
        """One client (one mutual-TLS channel) per node for the deployer's life: a fresh
        handshake per call costs more than the call."""
        with self._clients_lock:
            client = self._clients.get(node)
            if client is None:
                client = AgentClient(agent_address(self.cluster, node), timeout=self.timeout)
                self._clients[node] = client
            return client

    def _each(self, nodes: list[str], call: Callable[[AgentClient], T]) -> dict[str, T]:
        """``call`` on every node in parallel; the first node (in order) that does not
        answer fails the whole call."""
        answers, down = self._ask(nodes, call)
        for node in nodes:
            if node in down:
                raise down[node]
        return answers

    def _ask(
        self, nodes: list[str], call: Callable[[AgentClient], T]
    ) -> tuple[dict[str, T], dict[str, AgentUnreachable]]:
        """``call`` on every node in parallel; nodes that do not answer are reported, not
        raised."""

        def run(node: str) -> T | AgentUnreachable:
            try:
                return call(self._client(node))
            except AgentUnreachable as exc:
                return exc

        if not nodes:
            return {}, {}
        if len(nodes) == 1:
            results = {nodes[0]: run(nodes[0])}
        else:
            with self._clients_lock:
                if self._pool is None:
                    self._pool = ThreadPoolExecutor(PARALLEL_CALLS, "railnet-deploy")
                pool = self._pool
            results = dict(zip(nodes, pool.map(run, nodes), strict=True))
        answers: dict[str, T] = {}
        down: dict[str, AgentUnreachable] = {}
        for node, result in results.items():
            if isinstance(result, AgentUnreachable):
                down[node] = result
            else:
                answers[node] = result
        return answers, down

    def survey(self, env_id: str, hints: Iterable[str] = ()) -> Survey:
        """What the nodes of the environment hold. Starts from the environment's keepers,
        ``hints`` and the nodes this deployer last saw hosting it, and follows the node
        lists of the documents found; no other node is asked."""
        check_object_id("env_id", env_id)
        names = self.cluster.names
        with self._clients_lock:
            remembered = self._hosting.get(env_id, ())
        # The keepers among all nodes and among the schedulable ones: a node cordoned
        # since the last deploy still holds its copy until this one moves it.
        keepers = [*keepers_of(env_id, names), *keepers_of(env_id, self.cluster.schedulable)]
        start = [*keepers, *hints, *remembered]
        frontier = [n for n in dict.fromkeys(start) if n in names]
        held: dict[str, EnvironmentDocument | None] = {}
        down: dict[str, AgentUnreachable] = {}
        parsed: dict[str, EnvironmentDocument] = {}  # nodes in sync hold the same text
        with self._clients_lock:
            known = self._known.get(env_id)
        digest = known.digest if known is not None else ""
        while frontier:
            replies, unreachable = self._ask(frontier, lambda c: c.held(env_id, digest))
            down.update(unreachable)
            for node, reply in replies.items():
                with self._clients_lock:
                    self._takes_deltas[node] = bool(reply.digest)
                    self._delta_version[node] = reply.delta_version
                if reply.unchanged and known is not None:
                    held[node] = known
                    continue
                text = reply.text
                if text is not None and text not in parsed:
                    parsed[text] = EnvironmentDocument.from_json(text)
                held[node] = None if text is None else parsed[text]
            survey = Survey(held, down)
            frontier = sorted(survey.involved() & set(names) - held.keys() - down.keys())
        return Survey(held, down)

    def drift(self, env_id: str, nodes: Iterable[str]) -> list[str]:
        """What ``nodes`` report (``Status``) their kernel lacks of the environment, as
        ``node: change`` lines; a node that does not answer is left out (``survey`` names
        it). Empty when every node matches its document."""
        check_object_id("env_id", env_id)
        asked = sorted(set(nodes) & set(self.cluster.names))
        replies, _ = self._ask(asked, lambda c: c.status(env_id))
        return [
            f"{node}: {line}"
            for node in sorted(replies)
            for env in replies[node].environments
            if env.env_id == env_id
            for line in env.drift
        ]

    def read(self, env_id: str, hints: Iterable[str] = ()) -> dict[str, EnvironmentDocument | None]:
        """What the nodes that answered hold for the environment (see ``survey``)."""
        return self.survey(env_id, hints).held

    @staticmethod
    def latest(held: dict[str, EnvironmentDocument | None]) -> EnvironmentDocument | None:
        return newest(held)

    def apply(self, spec: EnvironmentSpec) -> Applied:
        """Make the environment exactly ``spec``."""
        return self.update(spec.project, spec.environment, lambda _: spec)

    def update(
        self,
        project: str,
        environment: str,
        edit: Callable[[EnvironmentSpec], EnvironmentSpec],
        hints: Iterable[str] = (),
    ) -> Applied:
        """Read-modify-write: ``edit`` gets what the nodes hold (as a spec) and returns the
        new declaration. On a conflict the whole round runs again from a fresh survey.
        ``hints`` are nodes likely to hold the environment (where it last was)."""
        env_id = environment_id(project, environment)
        hints = tuple(hints)
        with environment_lock(env_id):
            trust_held = True
            for attempt in range(MAX_ROUNDS):
                try:
                    return self._round(project, environment, edit, hints, trust_held)
                except DocumentConflict as exc:
                    log.info("environment %s: %s; retrying", env_id, exc)
                    time.sleep(random.uniform(0, BACKOFF_BASE * 2**attempt))
                    continue
                except AgentError as exc:
                    if exc.code == grpc.StatusCode.FAILED_PRECONDITION and trust_held:
                        # A node lost its state and got a new key: ask every node again.
                        trust_held = False
                        continue
                    if exc.code != grpc.StatusCode.ABORTED:
                        raise
                    log.info("environment %s: conflict (%s); retrying", env_id, exc.detail)
                    time.sleep(random.uniform(0, BACKOFF_BASE * 2**attempt))
        raise RailnetError(
            f"environment {env_id}: {MAX_ROUNDS} conflicting writers in a row; try again"
        )

    def _round(
        self,
        project: str,
        environment: str,
        edit: Callable[[EnvironmentSpec], EnvironmentSpec],
        hints: tuple[str, ...],
        trust_held: bool = True,
    ) -> Applied:
        env_id = environment_id(project, environment)
        stored = self.stored(env_id)
        if stored is not None and stored.document is not None:
            # Start where the store's document says the environment is.
            named = stored.document
            hints = (*hints, *(n.name for n in named.nodes), *named.keepers, *named.leaving)
        survey = self.survey(env_id, hints)
        held, previous = survey.held, survey.latest
        floor = 0
        if stored is not None and self.documents_here():
            # The store is the authority: what only nodes hold is a leftover (a node
            # restored from an old backup, say), replaced, or removed below as a node that
            # leaves. A node takes only a generation above the one it holds: the next
            # document goes above every leftover.
            previous = stored.document
            floor = max((d.generation for d in held.values() if d is not None), default=0)
        elif (
            stored is not None
            and stored.document is not None
            and (previous is None or previous.generation <= stored.document.generation)
        ):
            # Before the documents moved in, writers of the release before the store still
            # write to the nodes only: the newer of the two is the environment.
            previous = stored.document
        base = (
            spec_from_document(previous)
            if previous is not None
            else EnvironmentSpec(project, environment)
        )
        spec = edit(base)
        # A cordoned node hosts nothing after this round: every instance on it, whichever
        # service it belongs to, is placed again; nothing else moves.
        spec = drain(spec, set(self.cluster.cordoned), self.cluster.schedulable)
        for node in spec.nodes:
            self.cluster.node(node)  # names the unknown node before anything changes
        hosting = spec.nodes
        # An environment with neither services nor an owning Environment resource leaves
        # no record behind; any other keeps its document (settings, owner, resting
        # addresses) on its keepers.
        keep = keepers_of(spec.id, self.cluster.schedulable) if spec.services or spec.owner else ()
        holders = list(dict.fromkeys([*hosting, *keep]))
        # Everything that held the environment and will neither host nor keep it.
        leaving = sorted(
            (survey.involved() | {n for n, d in held.items() if d is not None}) - set(holders)
        )
        # Nodes already in the held document have their identity there; only new ones are
        # asked (EnsureEnvironment creates it on first call).
        known = {n.name: (n.public_key, n.endpoint) for n in previous.nodes} if previous else {}
        if not trust_held or (previous is not None and previous.key_rotation != spec.key_rotation):
            # A new rotation token: every hosting node stages a key for it (the same one
            # when a cut-short round asks again), and this document puts them in service.
            known = {}
        new_nodes = [n for n in hosting if n not in known]
        for node in new_nodes:
            if node in survey.unreachable:
                raise survey.unreachable[node]  # nothing has changed yet
        asked = self._each(new_nodes, lambda c: c.ensure(spec.id, spec.key_rotation))
        identities = {n: known.get(n) or asked[n] for n in hosting}
        # Recorded: the nodes that cannot be told now and must still remove something:
        # what they built, if they stop hosting it, or their copy of the document, if they
        # stop keeping it. The others are told right after the apply; should one of those
        # fail, the run fails and its retry finds the node again (it is where it was).
        hosted, involved = survey.hosted(), survey.involved()
        # Every holder was asked in this round (the survey, or EnsureEnvironment) and said
        # which formats it reads: write the highest all of them read.
        version = common_format(
            {n: self._client(n).formats or (1,) for n in holders if n not in survey.unreachable}
        )
        made: dict[str, DocumentDelta] = {}
        doc = build_document(
            spec,
            previous,
            identities,
            now=int(time.time()),
            leaving=tuple(
                n
                for n in sorted(survey.unreachable)
                if (n in hosted and n not in hosting) or (n in involved and n not in holders)
            ),
            keepers=keep,
            format=version,
            made=made,
        )
        if floor and doc.generation <= floor:
            # Above the leftovers, whose nodes take only a higher generation.
            doc = doc.with_generation(floor + 1)
            made = {}
        if (
            previous is not None
            and doc.with_generation(previous.generation) == previous
            and all(
                held.get(n) is None
                or held[n] == previous
                or held[n].generation < previous.generation  # type: ignore[union-attr]
                for n in holders
            )
        ):
            # Nothing changed: re-apply the held document, which only repairs drift. (Not
            # when racing writers left another document at the same generation somewhere:
            # then the next generation settles it.)
            doc = previous
        if not holders and any(n in survey.unreachable for n in leaving):
            # The record itself is going: no node would keep the removal to finish later.
            raise next(survey.unreachable[n] for n in leaving if n in survey.unreachable)
        if holders and all(n in survey.unreachable for n in holders):
            # No node could record the change.
            raise survey.unreachable[holders[0]]
        documents = self.stored_documents()
        if documents is not None and stored is not None:
            # The store first, in one transaction compared on what was read: of two writers
            # one lands, the other reads again. Nothing has changed on a node yet.
            if not holders:
                if stored.document is not None:
                    documents.delete(env_id, stored)
            elif stored.document != doc:
                documents.write(env_id, stored, doc)

        def expected(node: str) -> int:
            stored = held.get(node)
            return 0 if stored is None else stored.generation

        reachable = [n for n in holders if n not in survey.unreachable]
        made = {base: d for base, d in made.items() if d.digest == doc.digest}
        sends = self._sends(doc, {n: held.get(n) for n in reachable}, made)

        def apply(c: AgentClient) -> list[str]:
            whole, delta = sends[c.target.node]
            return c.apply(whole, expected(c.target.node), delta_json=delta)[1]

        switching = [n for n in reachable if n in hosting]
        rotating = any(
            held.get(n) is not None and held[n].key_rotation != doc.key_rotation  # type: ignore[union-attr]
            for n in switching
        )
        if rotating:
            # One hosting node after another: each pair of nodes then has one that switches
            # keys second, and that one's handshake reaches a peer that already knows its
            # new key. Switching at the same moment, both would start handshakes that
            # cross, and WireGuard settles crossed handshakes only by its retry, 5 s later.
            # Keepers that host nothing have no key to switch: they follow in parallel.
            applied, down = {}, {}
            for node in switching:
                answered, silent = self._ask([node], apply)
                applied.update(answered)
                down.update(silent)
            answered, silent = self._ask([n for n in reachable if n not in hosting], apply)
            applied.update(answered)
            down.update(silent)
        else:
            applied, down = self._ask(reachable, apply)
        gone = [n for n in leaving if held.get(n) is not None]
        _, leave_down = self._ask(gone, lambda c: c.delete(spec.id, expected(c.target.node)))
        with self._clients_lock:
            self._hosting[env_id] = tuple(holders) + tuple(leaving)
            self._known[env_id] = doc
        for node in hosting:
            failure = survey.unreachable.get(node) or down.get(node)
            if failure is not None:
                raise failure  # every other node has applied; the next run converges it
        for node in keep:
            failure = survey.unreachable.get(node) or down.get(node)
            if failure is not None:
                log.warning("environment %s: keeper %s did not answer", env_id, failure)
        if leave_down:
            raise leave_down[min(leave_down)]
        return Applied(document=doc, changes=applied, removed_from=tuple(gone))

    def _sends(
        self,
        doc: EnvironmentDocument,
        held: dict[str, EnvironmentDocument | None],
        made: dict[str, DocumentDelta] | None = None,
    ) -> dict[str, tuple[str, str]]:
        """Per node, what carries ``doc`` to it: ``(whole document, "")``, or ``("",
        delta)`` against the document the node holds, when its agent takes deltas and the
        delta is the smaller. Computed once per distinct held document; ``made``: deltas
        to ``doc`` already made, by the digest of their base."""
        whole: list[str] = []

        def text() -> str:
            if not whole:
                whole.append(doc.to_json())
            return whole[0]

        # Per base digest, and per the delta version read (1, or 2 and later): its JSON.
        deltas: dict[tuple[str, bool], str | None] = {}
        sends: dict[str, tuple[str, str]] = {}
        for node, base in held.items():
            with self._clients_lock:
                takes = self._takes_deltas.get(node, False)
                compact = self._delta_version.get(node, 0) >= 2
            if base is None or not takes or base.id != doc.id:
                sends[node] = (text(), "")
                continue
            key = (base.digest, compact)
            if key not in deltas:
                delta = (made or {}).get(base.digest) or DocumentDelta.between(base, doc)
                if delta is not None and compact:
                    delta = delta.leaving_out_nodes(base)
                deltas[key] = None if delta is None else delta.to_json()
            found = deltas[key]
            if found is None or (whole and len(found) >= len(whole[0])):
                sends[node] = (text(), "")
            else:
                sends[node] = ("", found)
        return sends

    def destroy(
        self,
        env_id: str,
        hints: Iterable[str] = (),
        expected: EnvironmentDocument | None = None,
    ) -> list[str]:
        """Remove the environment from every node that holds it; return those nodes.

        A node the environment names (hosting, keeping, or still to clean up) that does not
        answer fails the call, by name and address, before anything is removed: a copy of
        the document left on it would come back as the environment later. ``expected``: the
        document the caller checked (no other stack's services, say); the store's must
        still be it, or ``DocumentConflict`` and nothing changes."""
        check_object_id("env_id", env_id)
        with environment_lock(env_id):
            stored = self.stored(env_id)
            if (
                expected is not None
                and stored is not None
                and stored.document is not None
                and stored.document != expected
            ):
                raise DocumentConflict(env_id)
            named: set[str] = set()
            if stored is not None and stored.document is not None:
                doc = stored.document
                named = {n.name for n in doc.nodes} | set(doc.keepers) | set(doc.leaving)
                hints = (*hints, *sorted(named))
            survey = self.survey(env_id, hints)
            missing = sorted((survey.involved() | named) & survey.unreachable.keys())
            if missing:
                raise survey.unreachable[missing[0]]
            if stored is not None and stored.document is not None:
                # Compared: fails, changing nothing, when another stack joined since.
                self.stored_documents().delete(env_id, stored)  # type: ignore[union-attr]
            held = {n: d for n, d in survey.held.items() if d is not None}
            # Compared on what each node held: a document another runner put there since
            # (the name declared again) stays.
            removed = self._each(
                sorted(held), lambda c: c.delete(env_id, held[c.target.node].generation)
            )
        return [n for n, existed in removed.items() if existed]
