"""A service that lives in its own repository and stack: it joins shop/production, which
the stack of examples/basic declares and owns. Its settings (addresses, domain, TTL) are
that environment's; destroying this stack removes only this service."""

import pulumi

import pulumi_railnet as railnet

billing = railnet.Service("billing", environment="shop/production", replicas=2)

pulumi.export("billing_host", billing.private_domain)
pulumi.export("billing_env", billing.env_vars)
