"""An environment in the legacy IPv6-only mode.

Environments created before dual stack had only IPv6: their instances get a private IPv6
address from the environment's ULA /64 and no IPv4 address, and their names answer AAAA
queries only. Apps in such an environment must listen on ``::`` (or dual-stack sockets).
"""

import pulumi

import pulumi_railnet as railnet

legacy = railnet.Project("legacy-shop")
prod = railnet.Environment("production", project=legacy, ip_mode="ipv6")

api = railnet.Service("api", environment=prod, replicas=2)
cache = railnet.Service("cache", environment=prod)

pulumi.export("ip_mode", prod.ip_mode)
pulumi.export("ipv6_prefix", prod.ipv6_prefix)
pulumi.export("resolvers", prod.resolvers)  # IPv6 only
for svc_name, svc in (("api", api), ("cache", cache)):
    pulumi.export(f"{svc_name}_host", svc.private_domain)
    pulumi.export(f"{svc_name}_ipv4", svc.ipv4_addresses)  # empty
    pulumi.export(f"{svc_name}_ipv6", svc.ipv6_addresses)
    pulumi.export(f"{svc_name}_plan", svc.plan)
