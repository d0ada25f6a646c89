"""shop/staging with its own api: a second stack, a second environment."""

import pulumi

import pulumi_railnet as railnet

shop = railnet.Project("shop")
# Its own IPv4 range too: nothing of production means anything here.
staging = railnet.Environment("staging", project=shop, ipv4_cidr="10.251.0.0/16")
api = railnet.Service("api", environment=staging)
pulumi.export("api_host", api.private_domain)
