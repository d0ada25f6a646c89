"""The package's rooms and who may import whom, and the test tiers: checked on the source,
so a misplaced import or an unmarked test module fails here rather than in review."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import railnet

pytestmark = pytest.mark.unit

PACKAGE = Path(railnet.__file__).parent
TESTS = Path(__file__).resolve().parents[1]
STUBS = "railnet.agent.v1"

# The rooms on a node's side of the wire, which the tools at the edge may all use.
NODE_SIDE = frozenset({"core", "linux", "pki", "store", "agent", "control", STUBS})
ROOMS: dict[str, frozenset[str]] = {
    # room: the railnet rooms it may import (itself always)
    "core": frozenset(),
    "linux": frozenset({"core"}),
    "pki": frozenset({"core", "linux"}),
    "store": frozenset({"core", "pki"}),
    "agent": frozenset({"core", "linux", "pki", "store", STUBS}),
    "control": frozenset({"core", "pki", "store", STUBS}),
    "providers": frozenset({"core", "control"}),
    "engine": frozenset({"core", "control", "providers"}),
    "lab": NODE_SIDE,
    "demo": NODE_SIDE | {"lab", "engine", "providers"},
    "cli": NODE_SIDE | {"lab", "engine", "providers", "demo"},
}
ROOT_FILES = {"__init__.py", "__main__.py", "py.typed"}
TIERS = {"unit", "agent", "linux", "provider", "examples"}


def railnet_imports(path: Path) -> list[tuple[int, str]]:
    """Every ``railnet.*`` module that ``path`` imports, at any depth of the file."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
            found += [(node.lineno, node.module)]
            found += [(node.lineno, f"{node.module}.{a.name}") for a in node.names]
    return [(line, name) for line, name in found if name.split(".")[0] == "railnet"]


def room_of(module: str) -> str | None:
    parts = module.split(".")
    if len(parts) < 2:
        return None
    if module == STUBS or module.startswith(STUBS + "."):
        return STUBS
    return parts[1]


def violations(room: str) -> list[str]:
    allowed = ROOMS[room] | {room}
    found = []
    for path in sorted((PACKAGE / room).rglob("*.py")):
        if STUBS.replace(".", "/") in path.as_posix():
            continue
        for line, module in railnet_imports(path):
            target = room_of(module)
            if target is None or target in allowed:
                continue
            found.append(f"{path.relative_to(PACKAGE.parent)}:{line}: imports {module}")
    return sorted(set(found))


def test_the_root_holds_only_rooms() -> None:
    loose = sorted(
        p.name
        for p in PACKAGE.iterdir()
        if p.is_file() and p.name not in ROOT_FILES and not p.name.endswith(".pyc")
    )
    rooms = {p.name for p in PACKAGE.iterdir() if p.is_dir() and p.name != "__pycache__"}
    assert loose == []
    assert rooms == set(ROOMS)


@pytest.mark.parametrize("room", sorted(ROOMS))
def test_room_imports_only_what_it_may(room: str) -> None:
    assert violations(room) == []


def test_the_agent_never_imports_the_provider_side() -> None:
    assert not ROOMS["agent"] & {"providers", "control", "engine"}
    assert violations("agent") == []


def test_providers_reach_the_agents_only_through_control() -> None:
    for path in sorted((PACKAGE / "providers").rglob("*.py")):
        tree = ast.parse(path.read_text())
        modules = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
        modules |= {n.module or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
        assert not {m for m in modules if m == "grpc" or m.startswith("railnet.agent")}, path


def test_the_checker_sees_a_forbidden_import(tmp_path: Path) -> None:
    # The checker itself can fail: an agent module importing the deployer is caught.
    source = "def f():\n    from railnet.control.deployer import EnvironmentDeployer\n"
    (tmp_path / "x.py").write_text(source)
    imports = railnet_imports(tmp_path / "x.py")
    assert (2, "railnet.control.deployer") in imports
    assert room_of("railnet.control.deployer") not in ROOMS["agent"] | {"agent"}
    assert room_of("railnet.agent.v1.agent_pb2") == STUBS


# -- test tiers ------------------------------------------------------------------------------


def tier_markers(path: Path) -> list[str]:
    """The tier markers in a test module's ``pytestmark``."""
    tree = ast.parse(path.read_text(), str(path))
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(
            isinstance(t, ast.Name) and t.id == "pytestmark" for t in node.targets
        ):
            return [
                n.attr
                for n in ast.walk(node.value)
                if isinstance(n, ast.Attribute) and n.attr in TIERS
            ]
    return []


def all_test_modules() -> list[Path]:
    return sorted(TESTS.rglob("test_*.py"))


@pytest.mark.parametrize("path", all_test_modules(), ids=lambda p: str(p.relative_to(TESTS)))
def test_every_test_module_has_exactly_one_tier(path: Path) -> None:
    markers = tier_markers(path)
    assert len(markers) == 1, f"{path.name}: tier markers {markers}"
    assert markers[0] == path.parent.name, f"{path.name} is marked {markers[0]}"


UNIT_FORBIDDEN = {"socket", "threading", "subprocess", "grpc", "multiprocessing", "asyncio"}


@pytest.mark.parametrize("path", sorted((TESTS / "unit").glob("test_*.py")), ids=lambda p: p.name)
def test_unit_modules_open_no_sockets_and_start_no_threads(path: Path) -> None:
    tree = ast.parse(path.read_text())
    modules = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    modules |= {n.module or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
    assert not {m.split(".")[0] for m in modules} & UNIT_FORBIDDEN


def test_the_role_table_in_the_docs_is_the_one_in_the_code() -> None:
    from railnet.agent.authz import RPC_ROLES

    text = (TESTS.parent / "docs" / "security.md").read_text()
    rows = {}
    for line in text.splitlines():
        cells = [c.strip().strip("`") for c in line.strip().strip("|").split("|")]
        if len(cells) == 2 and cells[0] in RPC_ROLES:
            rows[cells[0]] = {r.strip() for r in cells[1].split(",")}
    assert rows == {rpc: {r.value for r in roles} for rpc, roles in RPC_ROLES.items()}
