"""What ``pulumi preview --json`` writes, read into typed steps; railnet's own picked out.

The file is Pulumi's preview digest (``display.PreviewDigest``): the stack configuration,
one entry per step the engine plans, diagnostics, and a count per operation.
``tests/fixtures/preview/README.md`` names the Pulumi sources this reading follows.

Two properties of the format shape this module:

- The engine writes a secret as the string ``"[secret]"`` and a value not known until the
  update runs as the string ``"04da6b54-80e4-46f7-96ec-b56ff0331ba9"``. Both become
  :data:`SECRET` and :data:`UNKNOWN` here, so no caller mistakes them for real values.
  (A real value spelled exactly like either cannot be told apart; the format loses that.)
- A step's ``newState`` may or may not carry ``outputs``: the engine serializes the state
  when the display gets to the event, which can be before or after the step ran in
  preview, and a provider without preview support (a dynamic one) then echoes its inputs.
  ``None`` outputs say "not in the file", never "empty".

Pure: parses a string; no files, no pulumi.
"""

from __future__ import annotations

import enum
import json
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Final, TypeAlias, TypeVar

from railnet.core.errors import InvalidField, RailnetError
from railnet.core.resources import Kind

PREVIEW_COMMAND: Final = "pulumi preview --json"

_SECRET_TEXT: Final = "[secret]"
_UNKNOWN_TEXT: Final = "04da6b54-80e4-46f7-96ec-b56ff0331ba9"
_SIG_KEY: Final = "4dabf18193072939515e22adb298388d"
_SECRET_SIG: Final = "1b47061264138c4ac30d75fd1eb44270"


class Placeholder(enum.Enum):
    """A value the preview file stands in for rather than shows."""

    SECRET = _SECRET_TEXT
    """A secret: the engine writes ``"[secret]"`` and never the value."""
    UNKNOWN = _UNKNOWN_TEXT
    """Known only once the update runs (an output of a resource not yet created)."""

    def __repr__(self) -> str:
        return self.name


SECRET: Final = Placeholder.SECRET
UNKNOWN: Final = Placeholder.UNKNOWN

Value: TypeAlias = (
    bool | int | float | str | Placeholder | tuple["Value", ...] | Mapping[str, "Value"] | None
)
"""A property value: JSON arrays become tuples, objects read-only mappings."""

Properties: TypeAlias = Mapping[str, Value]

_EMPTY: Final[Properties] = MappingProxyType({})

_E = TypeVar("_E", bound=enum.Enum)


class StepOp(enum.Enum):
    """The operations a step can carry (Pulumi's ``display.StepOp`` labels)."""

    SAME = "same"
    CREATE = "create"
    UPDATE = "update"
    DELETE = "delete"
    REPLACE = "replace"
    """The logical replacement; the two halves follow only with ``--show-replacement-steps``."""
    CREATE_REPLACEMENT = "create-replacement"
    DELETE_REPLACED = "delete-replaced"
    READ = "read"
    READ_REPLACEMENT = "read-replacement"
    REFRESH = "refresh"
    READ_DISCARD = "discard"
    DISCARD_REPLACED = "discard-replaced"
    REMOVE_PENDING_REPLACE = "remove-pending-replace"
    IMPORT = "import"
    IMPORT_REPLACEMENT = "import-replacement"


class DiffKind(enum.Enum):
    """How one property differs (the ``kind`` of a ``detailedDiff`` entry)."""

    ADD = "add"
    ADD_REPLACE = "add-replace"
    DELETE = "delete"
    DELETE_REPLACE = "delete-replace"
    UPDATE = "update"
    UPDATE_REPLACE = "update-replace"


class Severity(enum.Enum):
    DEBUG = "debug"
    INFO = "info"
    INFO_ERR = "info#err"
    WARNING = "warning"
    ERROR = "error"


class PreviewFileError(InvalidField):
    """The file is not what ``pulumi preview --json`` writes."""

    def __init__(self, source: str, where: str, problem: str) -> None:
        self.source = source
        self.where = where
        self.problem = problem
        # InvalidField's context, for callers that handle every InvalidField alike.
        self.field = where
        self.value = source
        self.reason = problem
        name = source or "the preview file"
        place = f"{name}: {where}" if where else name
        RailnetError.__init__(
            self,
            f"{place} {problem}; expected the JSON that `{PREVIEW_COMMAND}` writes "
            f"(run `{PREVIEW_COMMAND} > {_rerun_target(source)}` again)",
        )


def _rerun_target(source: str) -> str:
    """Where the hint tells the preview to go: the file given, when it is a JSON file
    (never, say, README.md: the hint would overwrite it), else ``preview.json``."""
    return source if source.endswith(".json") else "preview.json"


_DIGEST_FIELDS: Final = frozenset(
    {"config", "steps", "diagnostics", "duration", "changeSummary", "maybeCorrupt"}
)


class PreviewFailed(RailnetError):
    """The preview ran and failed: its plan would say nothing true."""

    def __init__(self, source: str, errors: list[Diagnostic]) -> None:
        self.source = source
        self.errors = tuple(errors)
        first = errors[0]
        text = " ".join(first.message.split())
        if len(text) > 200:
            text = text[:197] + "..."
        about = f" ({first.urn.rsplit('::', 1)[-1]})" if first.urn else ""
        more = f" and {len(errors) - 1} more error(s)" if len(errors) > 1 else ""
        super().__init__(
            f"{source or 'the preview file'}: the preview failed{about}: {text!r}{more}; "
            f"fix it and run `{PREVIEW_COMMAND}` again"
        )


@dataclass(frozen=True)
class ResourceState:
    """A resource as the step sees it before or after (Pulumi's ``ResourceV3``)."""

    urn: str
    type: str
    """The full type token, e.g. ``pulumi-python:dynamic/railnet:Service``."""
    custom: bool
    """Managed by a provider (False for components and the stack)."""
    id: str
    """The provider's id; empty before the resource exists."""
    inputs: Properties
    outputs: Properties | None
    """None when the file carries no outputs for this state (see the module docstring)."""
    parent: str
    provider: str
    """The provider reference, ``<provider urn>::<provider id>``."""
    delete: bool
    """The resource is pending deletion after a replacement."""
    protect: bool
    dependencies: tuple[str, ...]


@dataclass(frozen=True)
class PropertyDiff:
    kind: DiffKind
    input_diff: bool
    """True when old and new inputs differ, rather than old state and new inputs."""


@dataclass(frozen=True)
class PreviewStep:
    """One operation the engine plans for one resource."""

    index: int
    """Position in the file's ``steps``."""
    op: StepOp
    urn: str
    type: str
    """The resource's type token, from its URN."""
    name: str
    """The resource's name in the program (the URN's last part)."""
    provider: str
    old: ResourceState | None
    """The state before the step (absent for a create)."""
    new: ResourceState | None
    """The state the step aims at (absent for a delete)."""
    diff_reasons: tuple[str, ...]
    """Properties the provider reported as changed (often empty for dynamic providers)."""
    replace_reasons: tuple[str, ...]
    """Properties that force the replacement, for replace steps."""
    detailed_diff: Mapping[str, PropertyDiff] | None
    """Per-property diff, when the provider gave one."""

    @property
    def location(self) -> str:
        return f"steps[{self.index}]"

    @property
    def kind(self) -> Kind | None:
        """The railnet resource kind, or None for anything else."""
        return _KINDS.get(self.type)

    @property
    def old_inputs(self) -> Properties:
        return self.old.inputs if self.old is not None else _EMPTY

    @property
    def old_outputs(self) -> Properties:
        return _outputs(self.old)

    @property
    def new_inputs(self) -> Properties:
        return self.new.inputs if self.new is not None else _EMPTY

    @property
    def new_outputs(self) -> Properties:
        return _outputs(self.new)


@dataclass(frozen=True)
class Diagnostic:
    message: str
    severity: Severity
    urn: str = ""
    """The resource it is about; empty for a message of the program or the engine."""
    prefix: str = ""


@dataclass(frozen=True)
class PreviewFile:
    source: str
    """Where the text came from, for messages."""
    steps: tuple[PreviewStep, ...]
    change_summary: Mapping[StepOp, int]
    """Resources per operation, as the engine counted them (logical steps only)."""
    config: Mapping[str, str | Placeholder]
    """The stack configuration the preview ran with; secrets are :data:`SECRET`."""
    diagnostics: tuple[Diagnostic, ...]
    duration_ns: int
    """How long the preview took, in nanoseconds (0 when absent)."""
    maybe_corrupt: bool
    warnings: tuple[str, ...] = ()
    """What was left out, and why: steps (or counts) with an operation railnet does not know.
    Pulumi keeps adding operations, so one of them never fails the whole file."""

    def railnet_steps(self) -> tuple[PreviewStep, ...]:
        """The steps of railnet's Project, Environment and Service resources, in file order."""
        return tuple(s for s in self.steps if s.kind is not None)


_KINDS: Final[Mapping[str, Kind]] = MappingProxyType(
    {token: kind for kind in Kind for token in (kind.dynamic_token, kind.token)}
)


def _outputs(state: ResourceState | None) -> Properties:
    if state is None or state.outputs is None:
        return _EMPTY
    return state.outputs


# -- parsing ------------------------------------------------------------------------------


def parse_preview(text: str, source: str = "") -> PreviewFile:
    """Read the text of ``pulumi preview --json``; :class:`PreviewFileError` names what is
    wrong and where."""
    text = text.removeprefix("\ufeff")
    if not text.strip():
        raise PreviewFileError(source, "", "is empty")
    try:
        return _Reader(source).digest(json.loads(text))
    except json.JSONDecodeError as exc:
        raise _decode_error(source, text, exc) from None
    except RecursionError:
        # Pulumi's states nest a few levels; thousands mean the file is something else.
        raise PreviewFileError(source, "", "nests arrays or objects too deeply") from None


def _decode_error(source: str, text: str, exc: json.JSONDecodeError) -> PreviewFileError:
    end = len(text.rstrip())
    if exc.msg.startswith("Unterminated string") or exc.pos >= end:
        line, column = _line_column(text, max(end - 1, 0))
        inside = (
            f", inside a string begun at line {exc.lineno} column {exc.colno},"
            if exc.msg.startswith("Unterminated string")
            else ""
        )
        return PreviewFileError(
            source,
            "",
            f"is truncated: the text stops at line {line} column {column}{inside} before "
            "the JSON is complete (was the preview interrupted, or the file read while it "
            "was still being written?)",
        )
    if exc.msg.startswith("Extra data") and _looks_like_event_stream(text):
        return PreviewFileError(
            source,
            "",
            "holds one engine event per line (what `pulumi up --json` or `--event-log` "
            "write, and `pulumi preview --json` with PULUMI_ENABLE_STREAMING_JSON_PREVIEW "
            "set), not the single preview document",
        )
    return PreviewFileError(
        source, "", f"is not JSON: {exc.msg} at line {exc.lineno} column {exc.colno}"
    )


def _line_column(text: str, pos: int) -> tuple[int, int]:
    line = text.count("\n", 0, pos) + 1
    return line, pos - (text.rfind("\n", 0, pos) + 1) + 1


def _looks_like_event_stream(text: str) -> bool:
    first = text.lstrip().split("\n", 1)[0]
    try:
        event = json.loads(first)
    except json.JSONDecodeError:
        return False
    return isinstance(event, dict) and ("sequence" in event or "timestamp" in event)


def _describe(value: Any) -> str:
    kind = {
        dict: "an object",
        list: "an array",
        str: "a string",
        bool: "a boolean",
        int: "a number",
        float: "a number",
        type(None): "null",
    }.get(type(value), type(value).__name__)
    shown = json.dumps(value, ensure_ascii=False)
    if len(shown) > 60:
        shown = shown[:57] + "..."
    return f"{kind} ({shown})" if value is not None else kind


class _Reader:
    """Walks the decoded JSON, naming the path of anything out of shape."""

    def __init__(self, source: str) -> None:
        self.source = source

    def fail(self, where: str, problem: str) -> PreviewFileError:
        return PreviewFileError(self.source, where, problem)

    def wrong(self, where: str, expected: str, value: Any) -> PreviewFileError:
        return self.fail(where, f"must be {expected}, not {_describe(value)}")

    def object(self, where: str, value: Any) -> dict[str, Any]:
        if not isinstance(value, dict):
            raise self.wrong(where, "a JSON object", value)
        return value

    def optional_object(self, where: str, value: Any) -> dict[str, Any]:
        return {} if value is None else self.object(where, value)

    def string(self, where: str, value: Any, default: str | None = None) -> str:
        if value is None and default is not None:
            return default
        if not isinstance(value, str):
            raise self.wrong(where, "a string", value)
        return value

    def boolean(self, where: str, value: Any) -> bool:
        if value is None:
            return False
        if not isinstance(value, bool):
            raise self.wrong(where, "true or false", value)
        return value

    def count(self, where: str, value: Any) -> int:
        if value is None:
            return 0
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise self.wrong(where, "a whole number of 0 or more", value)
        return value

    def strings(self, where: str, value: Any) -> tuple[str, ...]:
        if value is None:
            return ()
        if not isinstance(value, list):
            raise self.wrong(where, "an array of strings", value)
        return tuple(self.string(f"{where}[{i}]", v) for i, v in enumerate(value))

    def enum_value(self, where: str, value: Any, enum_type: type[_E]) -> _E:
        text = self.string(where, value)
        try:
            return enum_type(text)
        except ValueError:
            known = ", ".join(repr(m.value) for m in enum_type)
            problem = f"is {text!r}, which Pulumi does not write (one of {known})"
            raise self.fail(where, problem) from None

    # -- the document ---------------------------------------------------------------------

    def digest(self, raw: Any) -> PreviewFile:
        if not isinstance(raw, dict):
            raise self.fail("", f"must hold a JSON object at the top, not {_describe(raw)}")
        self.recognise(raw)
        steps_raw = raw.get("steps")
        if steps_raw is None:
            steps_raw = []
        if not isinstance(steps_raw, list):
            raise self.wrong("steps", "an array of steps", steps_raw)
        config = {
            key: _config_value(self.string(f"config.{key}", value))
            for key, value in self.optional_object("config", raw.get("config")).items()
        }
        warnings: list[str] = []
        summary = {}
        for op, n in self.optional_object("changeSummary", raw.get("changeSummary")).items():
            count = self.count(f"changeSummary.{op}", n)
            known = self.known_op(f"changeSummary.{op}", op, warnings)
            if known is not None:
                summary[known] = count
        diagnostics_raw = raw.get("diagnostics")
        if diagnostics_raw is None:
            diagnostics_raw = []
        if not isinstance(diagnostics_raw, list):
            raise self.wrong("diagnostics", "an array", diagnostics_raw)
        steps = [self.step(i, s, warnings) for i, s in enumerate(steps_raw)]
        diagnostics = tuple(
            self.diagnostic(f"diagnostics[{i}]", d) for i, d in enumerate(diagnostics_raw)
        )
        errors = [d for d in diagnostics if d.severity is Severity.ERROR]
        if errors:
            raise PreviewFailed(self.source, errors)
        if not steps_raw and not summary and not warnings:
            # Every finished preview writes the root stack's step and counts it.
            raise self.fail(
                "",
                "holds no steps and no changeSummary, so it is not the output of a finished "
                "preview (a preview always writes at least the stack's own step)",
            )
        return PreviewFile(
            source=self.source,
            steps=tuple(s for s in steps if s is not None),
            change_summary=MappingProxyType(summary),
            config=MappingProxyType(config),
            diagnostics=diagnostics,
            duration_ns=self.count("duration", raw.get("duration")),
            maybe_corrupt=self.boolean("maybeCorrupt", raw.get("maybeCorrupt")),
            warnings=tuple(warnings),
        )

    def recognise(self, raw: dict[str, Any]) -> None:
        """Refuse a JSON object that holds none of the digest's fields."""
        if set(raw) & _DIGEST_FIELDS:
            return
        if not raw:
            raise self.fail("", "is an empty JSON object, not a preview")
        if "nodes" in raw:
            raise self.fail(
                "",
                'is a railnet cluster file (it has "nodes"), not a preview; give the cluster '
                "file to --against and the preview as the first argument",
            )
        keys = ", ".join(sorted(raw)[:5]) + (", ..." if len(raw) > 5 else "")
        raise self.fail(
            "",
            f"has none of a preview's fields (steps, changeSummary, config, diagnostics), "
            f"only {keys}",
        )

    def known_op(self, where: str, value: Any, warnings: list[str]) -> StepOp | None:
        """The operation, or None (and a warning) for a string railnet does not know."""
        text = self.string(where, value)
        try:
            return StepOp(text)
        except ValueError:
            warnings.append(
                f"{where} is {text!r}, an operation railnet does not know (a newer Pulumi?); "
                "left out of the plan"
            )
            return None

    def diagnostic(self, where: str, raw: Any) -> Diagnostic:
        fields = self.object(where, raw)
        return Diagnostic(
            message=self.string(f"{where}.message", fields.get("message"), ""),
            severity=self.enum_value(f"{where}.severity", fields.get("severity", "info"), Severity),
            urn=self.string(f"{where}.urn", fields.get("urn"), ""),
            prefix=self.string(f"{where}.prefix", fields.get("prefix"), ""),
        )

    def step(self, index: int, raw: Any, warnings: list[str]) -> PreviewStep | None:
        where = f"steps[{index}]"
        fields = self.object(where, raw)
        if "op" not in fields:
            raise self.fail(where, 'has no "op" (the operation Pulumi plans)')
        if "urn" not in fields:
            raise self.fail(where, 'has no "urn" (the resource the step is for)')
        urn = self.string(f"{where}.urn", fields["urn"])
        type_, name = self.urn_parts(f"{where}.urn", urn)
        op = self.known_op(f"{where}.op", fields["op"], warnings)
        if op is None:
            warnings[-1] = warnings[-1].replace("; left out", f" (for {name}); left out")
            return None
        return PreviewStep(
            index=index,
            op=op,
            urn=urn,
            type=type_,
            name=name,
            provider=self.string(f"{where}.provider", fields.get("provider"), ""),
            old=self.state(f"{where}.oldState", fields.get("oldState"), urn, type_),
            new=self.state(f"{where}.newState", fields.get("newState"), urn, type_),
            diff_reasons=self.strings(f"{where}.diffReasons", fields.get("diffReasons")),
            replace_reasons=self.strings(f"{where}.replaceReasons", fields.get("replaceReasons")),
            detailed_diff=self.detailed_diff(f"{where}.detailedDiff", fields.get("detailedDiff")),
        )

    def urn_parts(self, where: str, urn: str) -> tuple[str, str]:
        """(type, name) of ``urn:pulumi:<stack>::<project>::<qualified type>::<name>``."""
        parts = urn.removeprefix("urn:pulumi:").split("::", 3)
        if not urn.startswith("urn:pulumi:") or len(parts) != 4 or not all(parts[2:]):
            raise self.fail(
                where,
                f"is {urn!r}, not a Pulumi URN (urn:pulumi:STACK::PROJECT::TYPE::NAME)",
            )
        qualified, name = parts[2], parts[3]
        return qualified.rsplit("$", 1)[-1], name

    def state(self, where: str, raw: Any, urn: str, type_: str) -> ResourceState | None:
        if raw is None:
            return None
        fields = self.object(where, raw)
        outputs = fields.get("outputs")
        return ResourceState(
            urn=self.string(f"{where}.urn", fields.get("urn"), urn),
            type=self.string(f"{where}.type", fields.get("type"), type_),
            custom=self.boolean(f"{where}.custom", fields.get("custom")),
            id=self.string(f"{where}.id", fields.get("id"), ""),
            inputs=self.properties(f"{where}.inputs", fields.get("inputs")),
            outputs=None if outputs is None else self.properties(f"{where}.outputs", outputs),
            parent=self.string(f"{where}.parent", fields.get("parent"), ""),
            provider=self.string(f"{where}.provider", fields.get("provider"), ""),
            delete=self.boolean(f"{where}.delete", fields.get("delete")),
            protect=self.boolean(f"{where}.protect", fields.get("protect")),
            dependencies=self.strings(f"{where}.dependencies", fields.get("dependencies")),
        )

    def properties(self, where: str, raw: Any) -> Properties:
        if raw is None:
            return _EMPTY
        fields = self.object(where, raw)
        return MappingProxyType({key: _value(v) for key, v in fields.items()})

    def detailed_diff(self, where: str, raw: Any) -> Mapping[str, PropertyDiff] | None:
        if raw is None:
            return None
        diffs: dict[str, PropertyDiff] = {}
        for path, entry in self.object(where, raw).items():
            here = f"{where}.{path}"
            fields = self.object(here, entry)
            diffs[path] = PropertyDiff(
                kind=self.enum_value(f"{here}.kind", fields.get("kind"), DiffKind),
                input_diff=self.boolean(f"{here}.inputDiff", fields.get("inputDiff")),
            )
        return MappingProxyType(diffs)


def _config_value(raw: str) -> str | Placeholder:
    # The engine blinds secret settings to "[secret]" in the prelude it reports.
    return SECRET if raw == _SECRET_TEXT else raw


def _value(raw: Any) -> Value:
    """A decoded JSON value with the engine's stand-ins made explicit."""
    if isinstance(raw, str):
        if raw == _SECRET_TEXT:
            return SECRET
        if raw == _UNKNOWN_TEXT:
            return UNKNOWN
        return raw
    if isinstance(raw, list):
        return tuple(_value(v) for v in raw)
    if isinstance(raw, dict):
        # An encrypted secret object is masked before it is written; read one as a secret
        # all the same rather than show its ciphertext as a value.
        if raw.get(_SIG_KEY) == _SECRET_SIG:
            return SECRET
        return MappingProxyType({key: _value(v) for key, v in raw.items()})
    value: Value = raw
    return value
