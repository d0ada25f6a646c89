"""railnet: private networking for self-hosted platforms.

Every service of a project environment joins an encrypted WireGuard mesh and is reachable
as ``<service>.railway.internal``. See README.md for the tour.
"""

__version__ = "0.1.0"
