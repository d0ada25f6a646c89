"""Moving a cluster from the release before the control store into it.

``railnet cluster move-to-store`` first moves the membership (``railnet.control.membership``),
then the documents: ``move_documents_in`` writes every environment that some node holds
into the store as the newest document the nodes hold, unchanged (its generation, every
address), and then marks the store as the holder of the documents. From then on the store is
the authority (``DOCUMENTS_HERE``).
"""

from __future__ import annotations

from railnet.control.cluster import Cluster
from railnet.control.deployer import EnvironmentDeployer
from railnet.control.inspect import node_holdings
from railnet.core.errors import RailnetError


def move_documents_in(cluster: Cluster) -> list[str]:
    """Write each environment the nodes hold into the store, and mark the store as holding
    the documents; an environment the store has already is kept as it is. Every node must
    answer (one that does not might hold the newest document): ``AgentUnreachable`` names
    it, and nothing is marked. Returns the environments moved, as ``project/environment``;
    run again, it moves nothing."""
    names: dict[str, str] = {}
    holders: dict[str, list[str]] = {}
    for node in cluster.names:
        for holding in node_holdings(cluster, node):
            names.setdefault(holding.env_id, holding.name)
            holders.setdefault(holding.env_id, []).append(node)
    moved: list[str] = []
    with EnvironmentDeployer(cluster) as deployer:
        documents = deployer.stored_documents()
        if documents is None:
            raise RailnetError("the cluster names no control store ('store')")
        for env_id in sorted(names):
            stored = documents.read(env_id)
            # Every node that said it holds the environment is asked, whatever the keepers.
            survey = deployer.survey(env_id, holders[env_id])
            if survey.unreachable:
                raise survey.unreachable[min(survey.unreachable)]
            latest = survey.latest
            if latest is None:
                raise RailnetError(
                    f"environment {names[env_id]} ({env_id}): {', '.join(holders[env_id])} "
                    "said they hold it, and none gave its document; run again"
                )
            if stored.document is not None and stored.document.generation >= latest.generation:
                continue
            documents.write(env_id, stored, latest)  # compared on what was read
            moved.append(names[env_id])
        documents.mark_documents_here()
    return moved
