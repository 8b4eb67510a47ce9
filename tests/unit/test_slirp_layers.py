"""
The slirp package's layering, read from its source: the layers use the
engine only through L{vdetwist.slirp.context.LayerContext} (no module but
the driver and the test harness, which run an engine, imports the engine
module, not even for type checking), and no slirp module imports another
that imports it back (directly or round a circle).
"""

from __future__ import annotations

import ast
from collections import Counter
from pathlib import Path
from random import Random

from twisted.trial.unittest import TestCase

import vdetwist.slirp
from vdetwist.slirp.context import LayerContext, LinkSender
from vdetwist.slirp.engine import SlirpEngine
from vdetwist.slirp.testing import Harness

PACKAGE = "vdetwist.slirp"
ENGINE = PACKAGE + ".engine"
#: What runs an engine (rather than being one of its layers).
ENGINE_USERS = {PACKAGE + ".driver", PACKAGE + ".testing"}


def slirpImports() -> dict[str, set[str]]:
    """
    Each slirp module and the slirp modules it imports anywhere (at the
    top, in functions, under C{TYPE_CHECKING}).
    """
    root = Path(vdetwist.slirp.__file__).parent
    modules = {f"{PACKAGE}.{path.stem}": path for path in root.glob("*.py")
               if path.stem != "__init__"}
    graph = {}
    for name, path in modules.items():
        imported = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                imported.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                imported.add(node.module)
                imported.update(f"{node.module}.{alias.name}" for alias in node.names)
        graph[name] = {m for m in imported if m in modules and m != name}
    return graph


def findCycle(graph: dict[str, set[str]]) -> list[str]:
    """
    A circle of imports in C{graph} (its modules in order), or C{[]}.
    """
    done: set[str] = set()

    def visit(name: str, path: list[str]) -> list[str]:
        if name in path:
            return path[path.index(name):] + [name]
        if name in done:
            return []
        for imported in sorted(graph[name]):
            cycle = visit(imported, path + [name])
            if cycle:
                return cycle
        done.add(name)
        return []

    for name in sorted(graph):
        cycle = visit(name, [])
        if cycle:
            return cycle
    return []


class LayeringTests(TestCase):
    def test_graphSeesEveryKindOfImport(self):
        """
        The import graph counts imports under C{TYPE_CHECKING} and inside
        functions, and C{from package import module}.
        """
        graph = slirpImports()
        self.assertIn(PACKAGE + ".timers", graph[PACKAGE + ".link"])  # under TYPE_CHECKING
        self.assertIn(PACKAGE + ".tftp", graph[ENGINE])  # inside __init__
        self.assertIn(PACKAGE + ".packets", graph[PACKAGE + ".tcp"])  # from ... import packets

    def test_noLayerImportsTheEngine(self):
        graph = slirpImports()
        importers = {name for name, imported in graph.items() if ENGINE in imported}
        self.assertEqual(importers - ENGINE_USERS, set())

    def test_noImportCycle(self):
        self.assertEqual(findCycle(slirpImports()), [])

    def test_findCycle(self):
        """
        The cycle check finds a circle when there is one.
        """
        graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
        self.assertEqual(findCycle(graph), ["a", "b", "c", "a"])
        self.assertEqual(findCycle({"a": {"b"}, "b": set()}), [])


class ContextTests(TestCase):
    def test_engineIsALayerContext(self):
        """
        The engine provides what L{LayerContext} declares, and its link
        what L{LinkSender} declares.
        """
        engine = Harness().engine
        self.assertIsInstance(engine, SlirpEngine)
        for protocol, provider in ((LayerContext, engine), (LinkSender, engine.link)):
            for name in protocol.__annotations__:
                self.assertTrue(hasattr(provider, name), (protocol.__name__, name))
            for name, member in vars(protocol).items():
                if callable(member) and not name.startswith("_"):
                    self.assertTrue(callable(getattr(provider, name)), (protocol.__name__, name))
        self.assertIsInstance(engine.stats, Counter)
        self.assertIsInstance(engine.random, Random)
        self.assertIsInstance(engine.now(), float)
