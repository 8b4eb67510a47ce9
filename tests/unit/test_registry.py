"""
Finding backends and opening VNLs through them.
"""

from __future__ import annotations

import errno
import os

from twisted.internet.defer import succeed
from twisted.plugin import IPlugin, getPlugins
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import implementer
from zope.interface.verify import verifyObject

from vdetwist.errors import NoBackendError, VdeError, VNLError
from vdetwist.interfaces import IVdeBackend, IVdePlug
from vdetwist.registry import OpenArgs, Registry, decorate, registry
from vdetwist.testing import MemoryPlug

EXPECTED = {"null", "cmd", "ptp", "udp", "seqpacket"}


@implementer(IVdeBackend)
class RecordingBackend:
    """
    Opens a L{MemoryPlug} and remembers how it was asked to.
    """

    schemes = ("mem", "memory")
    summary = "in memory"

    def __init__(self) -> None:
        self.calls: list[tuple] = []

    def open(self, reactor, vnl, description, args, registry):
        self.calls.append((reactor, vnl, description, args, registry))
        return succeed(MemoryPlug(vnl.text))


class RegistryTests(SynchronousTestCase):
    def test_installedBackends(self) -> None:
        """
        The dropins provide a backend for each scheme of this issue, each a
        real L{IVdeBackend} plugin.
        """
        backends = registry.backends()
        self.assertTrue(EXPECTED <= set(backends), sorted(backends))
        for backend in backends.values():
            self.assertTrue(verifyObject(IVdeBackend, backend))
            self.assertTrue(IPlugin.providedBy(backend))
            self.assertTrue(backend.summary)

    def test_discoveredThroughTwistedPlugins(self) -> None:
        schemes = {s for b in getPlugins(IVdeBackend) for s in b.schemes}
        self.assertTrue(EXPECTED <= schemes)

    def test_opensThroughBackend(self) -> None:
        backend = RecordingBackend()
        reg = Registry([backend])
        args = OpenArgs(port=3, group="kvm", mode=0o660)
        plug = self.successResultOf(reg.open("REACTOR", "memory://x[1]", "qemu", args))
        self.assertTrue(verifyObject(IVdePlug, plug))
        [(reactor, vnl, description, passed, via)] = backend.calls
        self.assertEqual((reactor, passed, via), ("REACTOR", args, reg))
        self.assertEqual((vnl.scheme, vnl.argument, vnl.text), ("memory", "x[1]", "memory://x[1]"))
        self.assertTrue(description.startswith("qemu user="))

    def test_unknownScheme(self) -> None:
        """
        An unknown scheme fails with EPROTONOSUPPORT, naming the scheme and
        the installed ones.
        """
        reg = Registry([RecordingBackend()])
        failure = self.failureResultOf(reg.open(None, "nosuch://x"), NoBackendError)
        error = failure.value
        self.assertEqual(error.errno, errno.EPROTONOSUPPORT)
        self.assertEqual(
            str(error), "nosuch://x: no backend for scheme 'nosuch'; installed: mem, memory"
        )

    def test_plainPathIsVde(self) -> None:
        """
        A string without C{://} names a vde switch, and an unhelpful
        backend list says so.
        """
        failure = self.failureResultOf(
            Registry([RecordingBackend()]).open(None, "/nonexistent/sw"), NoBackendError
        )
        self.assertEqual(failure.value.scheme, "vde")

    def test_malformedVNL(self) -> None:
        """
        Parse errors of backends come back as failures naming the VNL.
        """
        failure = self.failureResultOf(registry.open(None, "udp://7000"), VNLError)
        self.assertTrue(str(failure.value).startswith("udp://7000: "))
        self.assertEqual(failure.value.errno, errno.EINVAL)

    def test_osErrorNamed(self) -> None:
        """
        An C{OSError} escaping a backend becomes a L{VdeError} with the VNL.
        """

        @implementer(IVdeBackend)
        class Failing:
            schemes = ("bad",)
            summary = "fails"

            def open(self, reactor, vnl, description, args, registry):
                raise PermissionError(errno.EACCES, "Permission denied")

        failure = self.failureResultOf(Registry([Failing()]).open(None, "bad://"), VdeError)
        self.assertEqual(failure.value.errno, errno.EACCES)
        self.assertEqual(str(failure.value), "bad://: Permission denied")


class DecorateTests(SynchronousTestCase):
    def test_format(self) -> None:
        """
        As libvdeplug4 4.0.1: user name, pid, and the ssh client address.
        """
        text = decorate("vdeplug:", {})
        self.assertRegex(text, r"^vdeplug: user=\S+ pid=%d$" % os.getpid())
        ssh = decorate("vdeplug:", {"SSH_CLIENT": "192.0.2.7 5555 22"})
        self.assertTrue(ssh.endswith(" SSH=192.0.2.7"))

    def test_length(self) -> None:
        self.assertEqual(len(decorate("x" * 300, {}).encode()), 127)
