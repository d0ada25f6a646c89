"""Pulumi dynamic providers for railnet's resources.

The SDK pickles these classes *by reference* (they live at this stable import path), so the
objects carry no state of their own: configuration arrives in ``configure`` inside the
provider process, and every gRPC channel to an agent is opened per call.
"""

from railnet.providers.environment import EnvironmentProvider
from railnet.providers.project import ProjectProvider
from railnet.providers.service import ServiceProvider

__all__ = ["EnvironmentProvider", "ProjectProvider", "ServiceProvider"]
