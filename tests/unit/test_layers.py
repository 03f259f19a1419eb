"""Imports run one way: each package of the engine may import only the packages below it.

The table is the architecture (README, "Layout"): the pure core at the bottom; the store and
the embedded servers on it; the pipeline on the store, reaching the outside only through its
ports, which the loudspeaker adapter implements; the HTTP layer on the store; the features (SMS,
drills) take what they need from core, store and HTTP. Only the composition root
(``dispatcher.app`` and the other loose modules of ``dispatcher/``) and the CLI may import
everything, so ``dispatcher`` imports an adapter or a feature nowhere else. The reference
receiver imports nothing of the engine but the wire contract (wire and signing), the task
helper and how a Chinese text is said (mandarin), and those import nothing of the engine but
each other.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from tests.helpers import ROOT

TOP = ("dispatcher", "adapters", "drills", "receiver")
# The subpackages that are packages of their own here; any other module belongs to its parent.
PACKAGES = (
    "dispatcher.core",
    "dispatcher.store",
    "dispatcher.pipeline",
    "dispatcher.http",
    "dispatcher.cli",
    "dispatcher.embedded",
    "adapters.loudspeaker",
    "adapters.sms",
    "drills",
    "receiver",
    "dispatcher",
)
EVERYTHING = frozenset(PACKAGES)
ALLOWED: dict[str, frozenset[str]] = {
    "dispatcher.core": frozenset(),
    "dispatcher.store": frozenset({"dispatcher.core"}),
    "dispatcher.embedded": frozenset({"dispatcher.core"}),
    # The loudspeaker adapter implements the pipeline's ports (dispatcher.pipeline.ports).
    "adapters.loudspeaker": frozenset({"dispatcher.core", "dispatcher.pipeline"}),
    "dispatcher.pipeline": frozenset({"dispatcher.core", "dispatcher.store"}),
    "dispatcher.http": frozenset({"dispatcher.core", "dispatcher.store"}),
    "adapters.sms": frozenset({"dispatcher.core", "dispatcher.store", "dispatcher.http"}),
    "drills": frozenset({"dispatcher.core", "dispatcher.store", "dispatcher.http"}),
    "receiver": frozenset(),  # RECEIVER_CONTRACT alone, checked below
    "dispatcher": EVERYTHING,  # the composition root
    "dispatcher.cli": EVERYTHING,
}


# The terminal's contract: what the reference receiver may import of the engine.
RECEIVER_CONTRACT = (
    "dispatcher.core.wire",
    "dispatcher.core.signing",
    "dispatcher.core.tasks",
    "dispatcher.core.mandarin",  # how a Chinese text is said: the engine's audio and the terminal's
)


def package_of(module: str) -> str | None:
    if module.split(".")[0] not in TOP:
        return None
    for package in PACKAGES:
        if module == package or module.startswith(package + "."):
            return package
    return module.split(".")[0]


def imports_of(path: Path) -> list[tuple[int, str]]:
    found: list[tuple[int, str]] = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append((node.lineno, node.module))
            # ``from dispatcher.http import alerts`` imports dispatcher.http.alerts.
            found.extend((node.lineno, f"{node.module}.{a.name}") for a in node.names)
        elif isinstance(node, ast.Import):
            found.extend((node.lineno, alias.name) for alias in node.names)
    return found


def engine_modules() -> list[tuple[str, Path]]:
    out = []
    for top in TOP:
        for path in sorted((ROOT / top).rglob("*.py")):
            relative = path.relative_to(ROOT).with_suffix("")
            name = ".".join(relative.parts).removesuffix(".__init__")
            if name != "adapters":  # a namespace for the adapters, empty
                out.append((name, path))
    return out


def test_every_engine_module_belongs_to_a_package_of_the_table() -> None:
    assert {package_of(name) for name, _ in engine_modules()} <= set(ALLOWED)


@pytest.mark.parametrize(("module", "path"), engine_modules(), ids=lambda v: str(v))
def test_imports_run_one_way(module: str, path: Path) -> None:
    own = package_of(module)
    assert own is not None
    wrong = []
    for line, imported in imports_of(path):
        target = package_of(imported)
        if target is None or target == own or imported in ("dispatcher", "adapters"):
            continue
        if own == "receiver":
            ok = imported.startswith("receiver") or any(
                imported == contract or imported.startswith(contract + ".")
                for contract in RECEIVER_CONTRACT
            )
        else:
            ok = target in ALLOWED[own]
        if not ok:
            wrong.append(f"{path.relative_to(ROOT)}:{line} imports {imported} ({own} → {target})")
    assert not wrong, "\n".join(wrong)


def test_no_two_packages_import_each_other() -> None:
    edges: set[tuple[str, str]] = set()
    for module, path in engine_modules():
        own = package_of(module)
        for _, imported in imports_of(path):
            target = package_of(imported)
            if own and target and target != own and imported not in ("dispatcher", "adapters"):
                edges.add((own, target))
    roots = {"dispatcher", "dispatcher.cli"}
    both = sorted((a, b) for a, b in edges if (b, a) in edges and a < b and not {a, b} & roots)
    assert not both, both


@pytest.mark.parametrize("contract", RECEIVER_CONTRACT)
def test_the_receiver_contract_imports_only_the_contract(contract: str) -> None:
    path = ROOT / (contract.replace(".", "/") + ".py")
    engine = [name for _, name in imports_of(path) if package_of(name) is not None]
    assert all(
        any(name == c or name.startswith(c + ".") for c in RECEIVER_CONTRACT) for name in engine
    ), engine
