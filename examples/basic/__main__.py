"""The seed topology: an API, a worker and a database in one environment, shop/production.

The API runs two replicas spread over the cluster's nodes; the worker and the database run
one each. Every service is reachable from the others as ``<name>.railway.internal``, and
from nowhere else.
"""

import pulumi

import pulumi_railnet as railnet

shop = railnet.Project("shop")
prod = railnet.Environment("production", project=shop)  # ip_mode="dual" by default

api = railnet.Service("api", environment=prod, replicas=2)
worker = railnet.Service("worker", environment=prod)
database = railnet.Service("database", environment=prod)

pulumi.export("env_id", prod.env_id)
pulumi.export("api_host", api.private_domain)  # "api.railway.internal"
pulumi.export("worker_host", worker.private_domain)
pulumi.export("database_host", database.private_domain)
pulumi.export("api_ipv4", api.ipv4_addresses)
pulumi.export("api_ipv6", api.ipv6_addresses)
pulumi.export("api_instances", api.instances)

# What to hand the worker's process: its own RAILWAY_* variables, plus where its database is.
pulumi.export(
    "worker_env",
    pulumi.Output.all(worker.env_vars, database.private_domain).apply(
        lambda args: {**args[0], "DATABASE_URL": f"http://{args[1]}:5432/"}
    ),
)
