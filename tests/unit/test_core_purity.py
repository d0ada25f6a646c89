"""railnet.core stays sans-I/O: no network, process, file-system or framework imports.

The agent, the provider's preview and ``railnet plan`` all run the same core code; it
must be importable and deterministic anywhere, so the rule is checked on the source.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import railnet.core

pytestmark = pytest.mark.unit

CORE = Path(railnet.core.__file__).parent

FORBIDDEN_MODULES = frozenset(
    {
        # frameworks and kernels the edges talk to
        "pulumi",
        "grpc",
        "pyroute2",
        "google.protobuf",
        # the network
        "socket",
        "ssl",
        "select",
        "selectors",
        "asyncio",
        "http",
        "urllib",
        "requests",
        "dns.query",
        "dns.asyncquery",
        "dns.resolver",
        "dns.asyncresolver",
        # processes, threads and the operating system
        "subprocess",
        "multiprocessing",
        "threading",
        "signal",
        "os",
        "shutil",
        "tempfile",
        "fcntl",
        "ctypes",
        "io",
        "time",
        "random",
        "secrets",
        "importlib",
        # every other room of railnet
        "railnet.agent",
        "railnet.cli",
        "railnet.control",
        "railnet.demo",
        "railnet.engine",
        "railnet.lab",
        "railnet.linux",
        "railnet.pki",
        "railnet.providers",
    }
)
# Names that would reach the file system or the clock through an allowed module.
FORBIDDEN_NAMES = frozenset({("pathlib", "Path"), ("datetime", "datetime")})
FORBIDDEN_CALLS = frozenset({"open", "exec", "eval", "__import__", "input", "print"})


def _forbidden_module(name: str) -> str | None:
    for banned in FORBIDDEN_MODULES:
        if name == banned or name.startswith(banned + "."):
            return banned
    return None


def violations(source: str, filename: str = "<source>") -> list[str]:
    """Every forbidden import or call in ``source``, as ``file:line: what``."""
    found: list[str] = []
    for node in ast.walk(ast.parse(source, filename)):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if _forbidden_module(alias.name):
                    found.append(f"{filename}:{node.lineno}: import {alias.name}")
        elif isinstance(node, ast.ImportFrom):
            module = node.module or ""
            if node.level:  # relative imports stay inside railnet.core
                continue
            if _forbidden_module(module):
                found.append(f"{filename}:{node.lineno}: from {module} import ...")
            for alias in node.names:
                full = f"{module}.{alias.name}"
                if _forbidden_module(full) or (module, alias.name) in FORBIDDEN_NAMES:
                    found.append(f"{filename}:{node.lineno}: from {module} import {alias.name}")
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id in FORBIDDEN_CALLS
        ):
            found.append(f"{filename}:{node.lineno}: call {node.func.id}()")
    return found


def core_modules() -> list[Path]:
    return sorted(CORE.rglob("*.py"))


def test_core_has_the_modules_we_expect() -> None:
    names = {p.stem for p in core_modules()}
    assert {"document", "addressing", "names", "local", "reconcile", "desired"} <= names


@pytest.mark.parametrize("path", core_modules(), ids=lambda p: p.name)
def test_core_module_is_sans_io(path: Path) -> None:
    assert violations(path.read_text(), str(path.relative_to(CORE.parent))) == []


@pytest.mark.parametrize(
    "source",
    [
        "import socket",
        "import os.path",
        "import grpc",
        "import pulumi.dynamic",
        "from pyroute2 import IPRoute",
        "import subprocess as sp",
        "import asyncio",
        "from dns import resolver",
        "import dns.query",
        "from railnet.agent.state import StateDir",
        "from pathlib import Path",
        "from os import environ",
        "def f():\n    import threading",
        "data = open('x').read()",
    ],
)
def test_the_checker_catches(source: str) -> None:
    assert violations(source), source


@pytest.mark.parametrize(
    "source",
    [
        "import ipaddress",
        "from pathlib import PurePath",
        "import dns.message",
        "from railnet.core.errors import InvalidField",
        "from . import names",
        "import hashlib, json",
        "from dataclasses import dataclass",
    ],
)
def test_the_checker_allows(source: str) -> None:
    assert violations(source) == []
