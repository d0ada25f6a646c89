"""``railnet:index:Project``: a namespace for environments; nothing on the nodes."""

from __future__ import annotations

from typing import Any, ClassVar

from pulumi.dynamic import CreateResult, ReadResult, UpdateResult

from railnet.core.resources import Kind
from railnet.providers.base import PROVIDER_KEY, RailnetProvider


class ProjectProvider(RailnetProvider):
    kind: ClassVar[Kind] = Kind.PROJECT

    def derived(self, inputs: dict[str, Any], olds: dict[str, Any] | None = None) -> dict[str, Any]:
        return {"plan": [f"project {inputs['name']}"]}

    def _outputs(self, props: dict[str, Any]) -> dict[str, Any]:
        outs = {k: v for k, v in props.items() if k != PROVIDER_KEY}
        outs.update(self.derived(props))
        return outs

    def create(self, props: dict[str, Any]) -> CreateResult:
        return CreateResult(str(props["name"]), self._outputs(props))

    def update(self, _id: str, _olds: dict[str, Any], news: dict[str, Any]) -> UpdateResult:
        return UpdateResult(self._outputs(news))

    def read(self, id_: str, props: dict[str, Any]) -> ReadResult:
        inputs = {"name": props.get("name", id_)}
        return ReadResult(id_, self._outputs({**props, **inputs}), inputs)

    def delete(self, _id: str, _props: dict[str, Any]) -> None:
        """A project holds nothing on the nodes; its environments are deleted first."""
