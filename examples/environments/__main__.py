"""One project, two environments with the same services.

Production and staging each get their own WireGuard mesh, address domain and DNS view:
``api.railway.internal`` answers in both, with different addresses, and neither
environment can resolve or reach the other's services. Staging runs smaller and uses a
different IPv4 range, to show that each environment's settings are its own.
"""

import pulumi

import pulumi_railnet as railnet

SERVICES = ("api", "worker", "database")

ENVIRONMENTS = {
    "production": {"replicas": {"api": 2, "worker": 2, "database": 1}},
    "staging": {"replicas": {"api": 1, "worker": 1, "database": 1}, "ipv4_cidr": "10.251.0.0/16"},
}

shop = railnet.Project("shop")

for env_name, settings in ENVIRONMENTS.items():
    env = railnet.Environment(env_name, project=shop, ipv4_cidr=settings.get("ipv4_cidr"))
    pulumi.export(f"{env_name}_env_id", env.env_id)
    pulumi.export(f"{env_name}_resolvers", env.resolvers)
    for service_name in SERVICES:
        # Pulumi names are unique per stack; the railnet name is what DNS answers to.
        svc = railnet.Service(
            f"{env_name}-{service_name}",
            name=service_name,
            environment=env,
            replicas=settings["replicas"][service_name],
        )
        pulumi.export(f"{env_name}_{service_name}_host", svc.private_domain)
        pulumi.export(f"{env_name}_{service_name}_ipv4", svc.ipv4_addresses)
        pulumi.export(f"{env_name}_{service_name}_ipv6", svc.ipv6_addresses)
