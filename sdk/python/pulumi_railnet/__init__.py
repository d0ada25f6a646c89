"""railnet for Pulumi: private networking for projects, environments and services.

    import pulumi, pulumi_railnet as railnet
    shop = railnet.Project("shop")
    prod = railnet.Environment("production", project=shop)
    api = railnet.Service("api", environment=prod, replicas=2)
    pulumi.export("api_host", api.private_domain)   # "api.railway.internal"

Stack settings: ``railnet:cluster`` (a cluster file's path or inline JSON) and the optional
``railnet:domain``.
"""

from pulumi_railnet.resources import Environment, Project, Service

__all__ = ["Environment", "Project", "Service"]
