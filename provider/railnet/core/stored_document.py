"""An environment document as the control store keeps it: a header and its services in
buckets.

A change to one service of a thousand writes that service's bucket and the header, not the
whole document, so the store's writes follow the change (docs/architecture.md). Services go
to one of ``BUCKETS`` buckets by a hash of their id: a transaction then never holds more
than ``BUCKETS + 1`` writes, within etcd's default limit of 128 operations, however large the
change. The header is the document without its services, plus the services' order
(``service_order``, their ids), which the document's canonical form depends on.
``assemble`` puts the parts back together and checks the result like any document from
outside: a part missing, one too many or a damaged one is named by its key.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from functools import lru_cache
from typing import Any

from railnet.core.document import EnvironmentDocument, ServiceEntry
from railnet.core.errors import InvalidField

HEADER = "header"
SERVICES = "services/"
ORDER = "service_order"
BUCKETS = 64


def header_part(doc: EnvironmentDocument) -> str:
    raw: dict[str, Any] = doc.header_dict()
    raw[ORDER] = [s.id for s in doc.services]
    return json.dumps(raw, sort_keys=True, separators=(",", ":"))


@lru_cache(maxsize=65536)
def bucket_key(service_id: str) -> str:
    """The part that holds the service ``service_id``."""
    index = int.from_bytes(hashlib.sha256(service_id.encode()).digest()[:4], "big") % BUCKETS
    return f"{SERVICES}{index:02x}"


def _bucket_text(services: Iterable[ServiceEntry]) -> str:
    # The entries' own canonical JSON, by id: no service is written anew for its bucket.
    ordered = sorted(services, key=lambda s: s.id)
    return "{" + ",".join(f"{json.dumps(s.id)}:{s.canonical}" for s in ordered) + "}"


def _buckets(services: Iterable[ServiceEntry]) -> dict[str, list[ServiceEntry]]:
    found: dict[str, list[ServiceEntry]] = {}
    for service in services:
        found.setdefault(bucket_key(service.id), []).append(service)
    return found


def parts(doc: EnvironmentDocument) -> dict[str, str]:
    """Every part of ``doc``, by its key under the environment's prefix."""
    found = {HEADER: header_part(doc)}
    found.update((key, _bucket_text(group)) for key, group in _buckets(doc.services).items())
    return found


def part_writes(
    base: EnvironmentDocument | None, doc: EnvironmentDocument
) -> tuple[dict[str, str], list[str]]:
    """What turns the stored ``base`` into ``doc``: the parts to write (the header, and
    each bucket with a service that is new, changed or gone) and the buckets to delete
    (left empty). Writes at most ``BUCKETS + 1`` parts."""
    if base is None:
        return parts(doc), []
    gone, came = doc.services_changed_from(base)
    touched = {bucket_key(s.id) for s in (*gone, *came)}
    writes = {HEADER: header_part(doc)}
    if not touched:
        return writes, []
    # Only the touched buckets' services are gathered; hashing an id is cached.
    grouped: dict[str, list[ServiceEntry]] = {key: [] for key in touched}
    for service in doc.services:
        group = grouped.get(bucket_key(service.id))
        if group is not None:
            group.append(service)
    deletes = sorted(key for key, group in grouped.items() if not group)
    writes.update((key, _bucket_text(group)) for key, group in grouped.items() if group)
    return writes, deletes


def assemble(found: Mapping[str, bytes | str], where: str = "store") -> EnvironmentDocument:
    """The document whose parts are ``found`` (keys relative to the environment's prefix);
    ``where`` prefixes the key in an error."""
    text = found.get(HEADER)
    if text is None:
        raise InvalidField(f"{where} {HEADER}", None, "is missing: the document has no header")
    header = _json(f"{where} {HEADER}", text)
    if not isinstance(header, dict) or not isinstance(header.get(ORDER), list):
        raise InvalidField(f"{where} {HEADER}.{ORDER}", None, "must list the services' ids")
    order = [str(sid) for sid in header.pop(ORDER)]
    entries: dict[str, tuple[str, Any]] = {}
    for key, part in found.items():
        if key == HEADER:
            continue
        bucket = _json(f"{where} {key}", part)
        if not key.startswith(SERVICES) or not isinstance(bucket, dict):
            raise InvalidField(f"{where} {key}", str(part)[:60], "is not a bucket of services")
        for sid, raw in bucket.items():
            if bucket_key(sid) != key:
                raise InvalidField(f"{where} {key}", sid, "holds a service of another bucket")
            entries[sid] = (key, raw)
    services = []
    for sid in order:
        if sid not in entries:
            raise InvalidField(f"{where} {bucket_key(sid)}", sid, "is missing: the header lists it")
        services.append(entries.pop(sid)[1])
    if entries:
        sid, (key, _) = sorted(entries.items())[0]
        raise InvalidField(f"{where} {key}", sid, "is not listed in the header")
    header["services"] = services
    return EnvironmentDocument.from_dict(header)


def _json(where: str, text: bytes | str) -> Any:
    try:
        return json.loads(text)
    except (ValueError, UnicodeDecodeError) as exc:
        raise InvalidField(where, str(text)[:60], f"is not JSON ({exc})") from None
