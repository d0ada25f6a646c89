"""What the three providers share: configuration, unknowns, check and diff."""

from __future__ import annotations

import threading
from typing import Any, ClassVar

from pulumi.dynamic import (
    CheckFailure,
    CheckResult,
    ConfigureRequest,
    DiffResult,
    ResourceProvider,
)
from pulumi.output import Unknown, contains_unknowns

from railnet.control.cluster import Cluster, load_cluster
from railnet.control.deployer import EnvironmentDeployer
from railnet.core.document import DEFAULT_DOMAIN
from railnet.core.errors import InvalidField, RailnetError
from railnet.core.resources import Kind, check_inputs, input_names, replace_keys

PROVIDER_KEY = "__provider"


class ProviderConfigError(RailnetError):
    """The stack configuration for railnet is missing or wrong."""


def cluster_from_setting(setting: Any) -> Cluster:
    """``railnet:cluster``: a cluster file's path, or the cluster as inline JSON."""
    if not isinstance(setting, str) or not setting.strip():
        raise ProviderConfigError(
            "stack setting railnet:cluster is not set; run "
            "'pulumi config set railnet:cluster PATH' with the cluster.json of your nodes "
            "(for a local lab: railnet-lab/cluster.json)"
        )
    return load_cluster(setting, "railnet:cluster", "point it at the cluster.json of your nodes")


def known(props: dict[str, Any]) -> dict[str, Any]:
    """The properties whose values are known (preview passes unknowns for the rest)."""
    return {k: v for k, v in props.items() if not contains_unknowns(v)}


class RailnetProvider(ResourceProvider):
    kind: ClassVar[Kind]
    derived_keys: ClassVar[tuple[str, ...]] = ("plan",)

    def __init__(self) -> None:
        super().__init__()

    # Configuration lives only in the provider process; __getstate__ keeps it out of
    # the pickled provider so that the program's serialization is deterministic.
    def __getstate__(self) -> dict[str, Any]:
        return {}

    def __setstate__(self, state: dict[str, Any]) -> None:
        pass

    def configure(self, req: ConfigureRequest) -> None:
        self._cluster_setting = req.config.get("railnet:cluster")
        self._domain = req.config.get("railnet:domain") or DEFAULT_DOMAIN
        self._lock = threading.Lock()
        self._cluster: Cluster | None = None

    @property
    def domain(self) -> str:
        return str(getattr(self, "_domain", DEFAULT_DOMAIN))

    def cluster(self) -> Cluster:
        lock = getattr(self, "_lock", None)
        if lock is None:
            raise ProviderConfigError("the railnet provider was used before it was configured")
        with lock:
            if self._cluster is None:
                self._cluster = cluster_from_setting(self._cluster_setting)
            return self._cluster

    def cluster_nodes(self) -> list[str] | None:
        """The cluster's node names; None when the provider was never configured, which
        happens only in-process (under ``pulumi.runtime.set_mocks``), never in the engine."""
        if getattr(self, "_lock", None) is None:
            return None
        return self.cluster().names

    def cordoned_nodes(self) -> list[str]:
        """The cluster's cordoned nodes (none when the provider was never configured)."""
        if getattr(self, "_lock", None) is None:
            return []
        return self.cluster().cordoned

    def deployer(self) -> EnvironmentDeployer:
        """The process's deployer (its channels live in the provider process only; the
        pickled provider carries none: see ``__getstate__``)."""
        cluster = self.cluster()
        with self._lock:
            deployer: EnvironmentDeployer | None = getattr(self, "_deployer", None)
            if deployer is None:
                deployer = EnvironmentDeployer(cluster)
                self._deployer = deployer
            return deployer

    # -- check / diff ---------------------------------------------------------------------

    def derived(self, inputs: dict[str, Any], olds: dict[str, Any]) -> dict[str, Any]:
        """What check computes for preview to show (``olds``: the previous inputs)."""
        return {}

    def check(self, olds: dict[str, Any], news: dict[str, Any]) -> CheckResult:
        facts = known(news)
        unknown = set(news) - set(facts)
        try:
            nodes = self.cluster_nodes()
            cordoned = self.cordoned_nodes()
        except RailnetError as exc:
            return CheckResult(dict(news), [CheckFailure("railnet:cluster", str(exc))])
        inputs, failures = check_inputs(
            self.kind,
            str(facts.get("name") or ""),
            {k: v for k, v in facts.items() if k != PROVIDER_KEY},
            cluster_nodes=nodes,
            cordoned_nodes=cordoned,
            default_domain=self.domain,
        )
        failures = [(p, r) for p, r in failures if p not in unknown]
        result = {k: v for k, v in inputs.items() if k not in unknown}
        for key in unknown:
            result[key] = news[key]
        if not unknown & set(input_names(self.kind)):
            if not failures:
                result.update(self.derived(result, known(olds)))
        else:
            # Preview with unknown inputs: what check computes is unknown too, and preview
            # shows it as "computed" rather than as a wrong value.
            result.update({key: Unknown() for key in self.derived_keys})  # type: ignore[no-untyped-call]
        return CheckResult(result, [CheckFailure(p, r) for p, r in failures])

    def diff(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> DiffResult:
        watched = [*input_names(self.kind)]
        changed = [
            k for k in watched if k != PROVIDER_KEY and _normal(olds.get(k)) != _normal(news.get(k))
        ]
        if news.get("pending_removals"):
            # The environment still has to leave a node that was down: an update finishes it.
            changed.append("pending_removals")
        replaces = [k for k in changed if k in replace_keys(self.kind)]
        return DiffResult(
            changes=bool(changed),
            replaces=replaces,
            stables=[],
            delete_before_replace=False,
        )


def _normal(value: Any) -> Any:
    if isinstance(value, (list, tuple)):
        return [_normal(v) for v in value]
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def require(inputs: dict[str, Any], *names: str) -> None:
    for name in names:
        if inputs.get(name) is None:
            raise InvalidField(name, None, "is required")
