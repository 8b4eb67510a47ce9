"""
The descriptor plug layer (L{vdetwist._transport}): the shared drain's error
classes and the cheaper event dispatch, on real sockets and a real epoll
reactor of the test's own.
"""

from __future__ import annotations

import errno
import os
import socket

from twisted.internet.epollreactor import EPollReactor
from twisted.internet.testing import MemoryReactor
from twisted.python import context, log
from twisted.trial.unittest import TestCase

import vdetwist
from tests.support import frame
from vdetwist._transport import dispatch
from vdetwist._transport.device import FramePlug
from vdetwist._transport.fdplug import GONE, HARMLESS, FdReader
from vdetwist._transport.dgram import DatagramPlug
from vdetwist.errors import PlugLost
from vdetwist.testing import FrameCollector


class ScriptedSocket:
    """
    A datagram socket whose C{recv} first raises the errors given, then
    reads the real socket.
    """

    def __init__(self, sock: socket.socket, *errors: int) -> None:
        self.sock = sock
        self.errors = list(errors)

    def recv(self, size: int) -> bytes:
        if self.errors:
            code = self.errors.pop(0)
            raise OSError(code, os.strerror(code))
        return self.sock.recv(size)

    def __getattr__(self, name: str):
        return getattr(self.sock, name)


def freshReactor(test: TestCase) -> EPollReactor:
    reactor = EPollReactor()
    test.addCleanup(reactor._poller.close)
    return reactor


class DrainTests(TestCase):
    """
    One readiness event reads on past harmless errors and ends the plug on
    others.
    """

    def pair(self, *errors: int) -> tuple[DatagramPlug, socket.socket, FrameCollector, EPollReactor]:
        reactor = freshReactor(self)
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.addCleanup(theirs.close)
        plug = DatagramPlug(reactor, ScriptedSocket(ours, *errors), "scripted")
        self.addCleanup(plug.close)
        collector = FrameCollector()
        plug.startReceiving(collector)
        return plug, theirs, collector, reactor

    def test_harmlessErrorsSkipped(self) -> None:
        """
        Errors that report an earlier send or a passing shortage do not end
        the batch's frames or the plug.
        """
        plug, theirs, collector, reactor = self.pair(
            errno.ECONNREFUSED, errno.ENOBUFS, errno.EHOSTUNREACH
        )
        theirs.send(frame(1))
        reactor.doIteration(0)
        self.assertEqual(collector.frames, [frame(1)])
        self.assertFalse(plug.closed)
        self.assertEqual(plug.stats.received, 1)

    def test_fatalErrorCloses(self) -> None:
        plug, theirs, collector, reactor = self.pair(errno.EIO)
        theirs.send(frame(1))
        reactor.doIteration(0)
        self.assertTrue(plug.closed)
        collector.reason.trap(PlugLost)
        self.assertEqual(
            collector.reason.getErrorMessage(), "scripted: receive failed: Input/output error"
        )

    def test_classesDisjoint(self) -> None:
        self.assertEqual(HARMLESS & GONE, frozenset())
        self.assertIn(errno.EAGAIN, HARMLESS)
        self.assertIn(errno.ENODEV, GONE)

    def test_deviceGone(self) -> None:
        """
        A device read failing with a L{GONE} error closes the plug naming
        the interface; the descriptor is closed once.
        """
        reactor = freshReactor(self)
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.addCleanup(theirs.close)
        plug = FramePlug(reactor, ours.detach(), "tapX", "tap://tapX")

        def gone(size: int) -> bytes:
            raise OSError(errno.EBADFD, "File descriptor in bad state")

        plug._recv = gone
        collector = FrameCollector()
        plug.startReceiving(collector)
        theirs.send(frame(1))
        reactor.doIteration(0)
        self.assertTrue(plug.closed)
        self.assertEqual(collector.reason.getErrorMessage(), "tap://tapX: interface tapX was deleted")
        self.assertEqual(plug.fileno(), -1)


class DispatchTests(TestCase):
    """
    The faster dispatch runs the same C{_doReadOrWrite} in the same log
    context as Twisted's.
    """

    def setUp(self) -> None:
        if not dispatch.SUPPORTED:
            raise self.skipTest("this Twisted's epoll reactor is not the one dispatch knows")

    def test_installedOnce(self) -> None:
        reactor = freshReactor(self)
        self.assertTrue(dispatch.install(reactor))
        first = reactor.doIteration
        self.assertTrue(dispatch.install(reactor))
        self.assertIs(reactor.doIteration, first)
        self.assertIs(reactor.doPoll, first)

    def test_optIn(self) -> None:
        """
        A plug leaves its reactor's dispatch alone: only a program's own
        call of the public L{vdetwist.fastDispatch} (our commands and
        C{twistd vde} make it) changes the reactor.
        """
        reactor = freshReactor(self)
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.addCleanup(theirs.close)
        plug = DatagramPlug(reactor, ours, "pair")
        self.addCleanup(plug.close)
        self.assertFalse(getattr(reactor, "_vdetwistDispatch", False))
        self.assertIs(vdetwist.fastDispatch, dispatch.install)
        self.assertTrue(vdetwist.fastDispatch(reactor))

    def test_otherReactorsUntouched(self) -> None:
        reactor = MemoryReactor()
        self.assertFalse(dispatch.install(reactor))
        self.assertFalse(hasattr(reactor, "_vdetwistDispatch"))

    def readers(self, reactor: EPollReactor, fast: bool, handler) -> socket.socket:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.addCleanup(ours.close)
        self.addCleanup(theirs.close)
        reader = FdReader(ours.fileno(), lambda: handler(ours), "reader-prefix")
        reader.fastEvents = fast
        reactor.addReader(reader)
        self.addCleanup(reactor.removeReader, reader)
        theirs.send(b"x")
        return ours

    def test_sameLogContext(self) -> None:
        """
        A fast descriptor and a plain one see the same C{system} in the log
        context while they handle their event, and the context is restored.
        """
        reactor = freshReactor(self)
        dispatch.install(reactor)
        seen = []

        def handler(sock: socket.socket) -> None:
            sock.recv(10)
            seen.append(context.get(log.ILogContext)["system"])

        self.readers(reactor, True, handler)
        self.readers(reactor, False, handler)
        before = context.get(log.ILogContext)
        reactor.doIteration(0)
        self.assertEqual(seen, ["reader-prefix", "reader-prefix"])
        self.assertIs(context.get(log.ILogContext), before)

    def test_errorLoggedAndDisconnected(self) -> None:
        """
        An exception in a fast descriptor's C{doRead} is logged and ends the
        descriptor (C{connectionLost}), as Twisted does.
        """
        reactor = freshReactor(self)
        dispatch.install(reactor)
        lost = []

        def handler(sock: socket.socket) -> None:
            raise ValueError("boom")

        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.addCleanup(ours.close)
        self.addCleanup(theirs.close)
        reader = FdReader(ours.fileno(), lambda: handler(ours), "reader-prefix", lost.append)
        reactor.addReader(reader)
        theirs.send(b"x")
        reactor.doIteration(0)
        self.assertEqual(len(self.flushLoggedErrors(ValueError)), 1)
        self.assertEqual(len(lost), 1)
        lost[0].trap(ValueError)
        self.assertNotIn(reader, reactor.getReaders())
