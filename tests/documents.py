"""Environment documents for tests: services on one node, addresses handed out in order."""

from __future__ import annotations

from railnet.core.addressing import ula_prefix
from railnet.core.document import EnvironmentDocument

KEY = "A" * 43 + "="


def make_document(
    services: dict[str, int],
    *,
    env_id: str = "e1",
    environment: str = "production",
    ip_mode: str = "dual",
    domain: str | None = None,
    ttl: int | None = None,
    generation: int = 1,
    first: int = 3,
) -> EnvironmentDocument:
    """An environment with ``services`` (name -> replicas) on node-1; the instances get the
    addresses at offsets ``first``, ``first + 1``, ... of the IPv4 range and the ULA."""
    prefix = ula_prefix(env_id).network_address
    offset = first
    raw_services = []
    for position, (name, replicas) in enumerate(services.items()):
        instances = []
        for _ in range(replicas):
            ipv4 = f"10.250.{offset // 256}.{offset % 256}" if ip_mode == "dual" else None
            instances.append({"node": "node-1", "ipv4": ipv4, "ipv6": str(prefix + offset)})
            offset += 1
        raw_services.append({"id": f"s{position}", "name": name, "instances": instances})
    raw: dict[str, object] = {
        "id": env_id,
        "project": "shop",
        "environment": environment,
        "generation": generation,
        "ip_mode": ip_mode,
        "nodes": [{"name": "node-1", "public_key": KEY, "endpoint": "198.18.0.1:51820"}],
        "services": raw_services,
    }
    if ip_mode == "ipv6":
        raw["ipv4_cidr"] = None
    if domain is not None:
        raw["domain"] = domain
    if ttl is not None:
        raw["dns_ttl"] = ttl
    return EnvironmentDocument.from_dict(raw)
