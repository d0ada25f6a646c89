"""A document change sent as the difference against the generation a node holds.

Most deploys change one service of an environment that may hold a thousand. Sending each
node the whole next document makes every deploy cost the environment's size in bytes, and
every agent parse and check all of it. A ``DocumentDelta`` carries only what differs:

- ``header``: every top-level field of the next document except its services (nodes,
  keepers, quarantined addresses, generation...), in the document's own JSON shape;
- ``upserts``: the services that are new or changed, whole;
- ``removed``: the ids of the services that are gone.

Applying it to the base keeps the base's service order: a changed service stays where it
was, removed ones drop out, new ones follow in the order given. That is the order
``railnet.core.desired.with_service`` produces, so ordinary edits travel as deltas; any
other edit is sent whole (``DocumentDelta.between`` says so by returning None).

Compare-and-set is unchanged. A delta names the base by generation *and* digest (SHA-256 of
the canonical JSON), and the digest of the document it produces; a node whose document is
not that base refuses the delta (``StaleBase``), and the writer reads again. Checking is as
strict as for a whole document, and costs what the change costs: the header and the upserts
go through the same reader, then the few facts that span services (unique names, ids and
addresses; known nodes) are checked against the services kept.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from railnet.core.document import READABLE_FORMATS, EnvironmentDocument, ServiceEntry
from railnet.core.errors import InvalidField, StaleBase

DELTA_KEYS = frozenset(
    {"base_generation", "base_digest", "digest", "header", "upserts", "removed", "same_nodes"}
)
DELTA_VERSION = 2
"""The deltas this release reads, as agents say in ``GetDocumentResponse.delta_version``:

1. (said as 0) The first: the header carries every field of the next document but its
   services, nodes included.
2. A header may leave ``nodes`` out when they are the base's (``same_nodes``): every node
   of an environment gets a delta per deploy, so a node list in each would make a deploy's
   bytes grow with the square of the environment's nodes.
"""
PLAN_FIELDS = ("id", "ip_mode", "ipv4_cidr")
"""Header fields a delta never changes: they decide every address, so a change of them is
a change of every service, sent as a whole document."""


@dataclass(frozen=True)
class DocumentDelta:
    """The next document of an environment, as a change to the one a node holds."""

    base_generation: int
    """The generation the change applies to."""
    base_digest: str
    """``EnvironmentDocument.digest`` of that generation's document."""
    digest: str
    """The digest of the document the change produces: the node checks it got exactly the
    document the writer built."""
    header: Mapping[str, Any]
    """The next document's JSON without ``services``."""
    upserts: tuple[Mapping[str, Any], ...]
    """New and changed services, in the document's JSON shape."""
    removed: tuple[str, ...]
    """Ids of the services that are gone."""
    same_nodes: bool = False
    """The header leaves ``nodes`` out: they are the base's (delta version 2)."""

    @classmethod
    def between(cls, base: EnvironmentDocument, doc: EnvironmentDocument) -> DocumentDelta | None:
        """The delta that turns ``base`` into ``doc``; None when ``doc`` is better sent
        whole (another environment, another address plan, a reordering of services)."""
        if any(getattr(base, f) != getattr(doc, f) for f in PLAN_FIELDS):
            return None
        gone, came = doc.services_changed_from(base)
        changed = {s.id for s in came}
        delta = cls(
            base_generation=base.generation,
            base_digest=base.digest,
            digest=doc.digest,
            header=doc.header_dict(),
            upserts=tuple(s.to_dict() for s in came),
            removed=tuple(s.id for s in gone if s.id not in changed),
        )
        header = EnvironmentDocument.from_dict({**delta.header, "services": []})
        if base.changed(header, delta.removed, came) != doc:
            return None  # the order is not one a delta keeps
        return delta

    def leaving_out_nodes(self, base: EnvironmentDocument) -> DocumentDelta:
        """This delta without the header's node list when it is ``base``'s (for agents
        that read delta version 2); itself otherwise."""
        if self.same_nodes or "nodes" not in self.header:
            return self
        if self.header["nodes"] != base.header_dict()["nodes"]:
            return self
        header = {k: v for k, v in self.header.items() if k != "nodes"}
        return replace(self, header=header, same_nodes=True)

    # -- applying ------------------------------------------------------------------------

    def apply_to(
        self, base: EnvironmentDocument, formats: Sequence[int] = READABLE_FORMATS
    ) -> EnvironmentDocument:
        """The next document, checked as strictly as a whole one would be. Raises
        ``StaleBase`` when ``base`` is not the document the delta was made against."""
        if base.generation != self.base_generation or base.digest != self.base_digest:
            raise StaleBase(base.id, base.generation, self.base_generation)
        if "services" in self.header:
            raise InvalidField("delta.header.services", "[...]", "services travel as upserts")
        header = dict(self.header)
        if self.same_nodes:
            if "nodes" in header:
                raise InvalidField(
                    "delta.header.nodes", "[...]", "is left out when same_nodes is true"
                )
            header["nodes"] = base.header_dict()["nodes"]
        plan = {"id": base.id, "ip_mode": base.ip_mode.value, "ipv4_cidr": base.ipv4_cidr}
        for field, value in plan.items():
            if header.get(field, ...) != value:
                raise InvalidField(
                    f"delta.header.{field}",
                    header.get(field),
                    f"must be the base's {value!r}; a change of the address plan is sent as "
                    "a whole document",
                )
        # The header and the changed services, read as a document of their own: every
        # field is checked, with its path (``services[i]`` counts the upserts).
        partial = EnvironmentDocument.from_dict({**header, "services": list(self.upserts)}, formats)
        changed = {s.id for s in partial.services}
        for i, sid in enumerate(self.removed):
            if sid in changed:
                raise InvalidField(f"delta.removed[{i}]", sid, "is also among the upserts")
        self._check_kept(base, partial, changed.union(self.removed))
        doc = base.changed(partial, self.removed, partial.services)
        if doc.digest != self.digest:
            raise InvalidField(
                "delta.digest",
                self.digest,
                f"the change applied to generation {base.generation} gives {doc.digest}; "
                "send the whole document",
            )
        return doc

    @staticmethod
    def _check_kept(base: EnvironmentDocument, partial: EnvironmentDocument, out: set[str]) -> None:
        """What spans services: the ones ``base`` keeps (all but the ids ``out``) still fit
        the new header and do not clash with the upserts. Looked up in ``base``'s index,
        so it costs the upserts and the header, not the services kept."""
        index = base.services_index

        def kept(sid: str | None) -> ServiceEntry | None:
            return index.by_id[sid] if sid is not None and sid not in out else None

        for s in partial.services:
            if (other := kept(index.by_name.get(s.name))) is not None:
                raise InvalidField(
                    "delta.upserts", s.name, f"is already the name of service {other.id}"
                )
            for inst in s.instances:
                for address in (inst.ipv4, inst.ipv6):
                    if address is not None and (other := kept(index.by_address.get(address))):
                        raise InvalidField(
                            "delta.upserts", address, f"is in use by service {other.name}"
                        )
        nodes = {n.name for n in partial.nodes}
        for node in sorted(index.on_node.keys() - nodes):
            # The node's instances are all of services that go or change, or it is a
            # node the kept ones still run on.
            going = (index.by_id[sid] for sid in out if sid in index.by_id)
            leaving = sum(1 for s in going for i in s.instances if i.node == node)
            if index.on_node[node] > leaving:
                holder = next(
                    svc
                    for svc in base.services
                    if svc.id not in out and any(i.node == node for i in svc.instances)
                )
                raise InvalidField(
                    "delta.header.nodes",
                    sorted(nodes),
                    f"leaves out node {node}, which service {holder.name} still runs on",
                )
        for f in partial.freed:
            if (other := kept(index.by_address.get(f.address))) is not None:
                raise InvalidField(
                    "delta.header.freed", f.address, f"is in use by service {other.name}"
                )

    # -- the wire ------------------------------------------------------------------------

    def to_json(self) -> str:
        raw: dict[str, Any] = {
            "base_generation": self.base_generation,
            "base_digest": self.base_digest,
            "digest": self.digest,
            "header": dict(self.header),
            "upserts": list(self.upserts),
            "removed": list(self.removed),
        }
        if self.same_nodes:  # left out otherwise: what an agent of version 1 reads
            raw["same_nodes"] = True
        return json.dumps(raw, sort_keys=True, separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str | bytes) -> DocumentDelta:
        try:
            raw = json.loads(text)
        except (ValueError, UnicodeDecodeError) as exc:
            raise InvalidField("delta", str(text)[:60], f"is not JSON ({exc})") from None
        if not isinstance(raw, dict):
            raise InvalidField("delta", raw, "must be an object")
        for key in sorted(raw):
            if key not in DELTA_KEYS:
                raise InvalidField(f"delta.{key}", raw[key], "is not a field of a delta")
        generation = raw.get("base_generation")
        if not isinstance(generation, int) or isinstance(generation, bool) or generation < 1:
            raise InvalidField("delta.base_generation", generation, "must be an integer >= 1")
        digests = []
        for key in ("base_digest", "digest"):
            value = raw.get(key)
            if not isinstance(value, str) or len(value) != 64:
                raise InvalidField(f"delta.{key}", value, "must be a SHA-256 digest in hex")
            digests.append(value)
        header = raw.get("header")
        if not isinstance(header, dict):
            raise InvalidField("delta.header", header, "must be an object")
        upserts = raw.get("upserts", [])
        if not isinstance(upserts, list):
            raise InvalidField("delta.upserts", upserts, "must be a list")
        removed = raw.get("removed", [])
        if not isinstance(removed, list) or not all(isinstance(r, str) for r in removed):
            raise InvalidField("delta.removed", removed, "must be a list of service ids")
        same_nodes = raw.get("same_nodes", False)
        if not isinstance(same_nodes, bool):
            raise InvalidField("delta.same_nodes", same_nodes, "must be true or false")
        return cls(
            base_generation=generation,
            base_digest=digests[0],
            digest=digests[1],
            header=header,
            upserts=tuple(upserts),
            removed=tuple(removed),
            same_nodes=same_nodes,
        )
