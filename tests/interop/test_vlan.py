"""
C{vlan://}: the tagging rules (every row of the verified behaviour matrix of
the spec, qinq, the C quirks), the plug over a nested plug opened through
the same registry, and interop with the C libvdeplug_vlan on a C hub.
"""

from __future__ import annotations

import os
import struct

from twisted.internet import reactor
from twisted.internet.task import deferLater
from twisted.logger import capturedLogs, formatEvent
from twisted.plugin import IPlugin
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import implementer

from tests.nested_support import HubTestCase, MemoryBackend, mac, numberOf, numbers, testFrame
from tests.support import cPlug, ourPlug, until
from vdetwist.backends.agno import AgnoBackend
from vdetwist.backends.vlan import VlanBackend, vlanRules
from vdetwist.errors import PlugClosed, VNLError
from vdetwist.interfaces import IVdeBackend
from vdetwist.registry import OpenArgs, Registry, decorate
from vdetwist.testing import FrameCollector
from vdetwist.wire.vlan import (
    TPID_8021AD,
    VlanRules,
    parseTagList,
    quirkIgnoresTagList,
    vlanok,
)
from vdetwist.vnl import resolve

DST = b"\xff" * 6
SRC = mac(1)
BODY = struct.pack(">H", 0x88B5) + bytes(range(50))


def untagged() -> bytes:
    return DST + SRC + BODY


def tagged(vid: int, tpid: int = 0x8100, pcp: int = 0) -> bytes:
    return DST + SRC + struct.pack(">HH", tpid, pcp << 13 | vid) + BODY


def rules(vnl: str) -> VlanRules:
    return vlanRules(resolve(vnl))[0]


DROPPED = None


class MatrixTests(SynchronousTestCase):
    """
    The verified matrix (spec vlan-agno-slirp.md §1.4), row by row: what the
    VM sends as the network gets it, what the network sends as the VM gets
    it.
    """

    def check(self, vnl: str, toNetwork: dict, toVM: dict) -> None:
        r = rules(vnl)
        for given, expected in toNetwork.items():
            frame = untagged() if given is None else tagged(given)
            want = None if expected is DROPPED else (
                untagged() if expected == "untagged" else tagged(expected))
            self.assertEqual(r.toNetwork(frame), want, f"{vnl}: VM {given} -> net")
        for given, expected in toVM.items():
            frame = untagged() if given is None else tagged(given)
            want = None if expected is DROPPED else (
                untagged() if expected == "untagged" else tagged(expected))
            self.assertEqual(r.toVM(frame), want, f"{vnl}: net {given} -> VM")

    def test_untaggedVlanOnly(self) -> None:
        """
        C{vlan://3}: the VM is on VLAN 3, untagged; nothing else passes.
        """
        self.check(
            "vlan://3{sw}",
            {None: 3, 10: DROPPED, 3: DROPPED, 4: DROPPED},
            {None: DROPPED, 3: "untagged", 10: DROPPED, 11: DROPPED, 12: DROPPED},
        )

    def test_untagAndMappedTags(self) -> None:
        """
        C{vlan://3/untag=4/tag=10:11-12}: VLAN 10 as is, VM 11 is network
        12, VM tagged 4 is network untagged.
        """
        self.check(
            "vlan://3/untag=4/tag=10:11-12{sw}",
            {None: 3, 10: 10, 11: 12, 12: DROPPED, 4: "untagged", 5: DROPPED},
            {None: 4, 3: "untagged", 10: 10, 11: DROPPED, 12: 11, 4: DROPPED},
        )

    def test_oneCharacterTagListIgnored(self) -> None:
        """
        C{vlan://3/tag=5}: the C plugin ignores a tag list made of a single
        one-character token; vdetwist replicates it (for compatibility: the
        same VNL is the same network with either), so VLAN 5 is dropped.
        """
        self.check(
            "vlan://3/tag=5{sw}",
            {None: 3, 10: DROPPED, 5: DROPPED},
            {None: DROPPED, 3: "untagged", 5: DROPPED, 10: DROPPED, 11: DROPPED},
        )
        # The ways to say it that work, in C as here.
        for vnl in ("vlan://3/tag=5:{sw}", "vlan://3/tag=05{sw}", "vlan://3/t=5.{sw}"):
            self.assertEqual(rules(vnl).toNetwork(tagged(5)), tagged(5), vnl)
        self.assertTrue(quirkIgnoresTagList("5"))
        self.assertTrue(quirkIgnoresTagList(":5"))
        self.assertFalse(quirkIgnoresTagList("5:"))
        self.assertFalse(quirkIgnoresTagList("10"))
        self.assertFalse(quirkIgnoresTagList(""))
        self.assertEqual(parseTagList("5", cQuirk=False), ((5, 5),))
        # The user is told.
        with capturedLogs() as events:
            rules("vlan://3/tag=5{sw}")
            rules("vlan://3/tag=5:{sw}")
        [event] = events
        self.assertIn("tag=5 is ignored", formatEvent(event))

    def test_trunk(self) -> None:
        """
        C{vlan://3/tag=10/trunk}: any valid VLAN passes unchanged both ways.
        """
        self.check(
            "vlan://3/tag=10/trunk{sw}",
            {None: 3, 10: 10, 4: 4, 5: 5, 100: 100, 4094: 4094,
             1: DROPPED, 4095: DROPPED},
            {None: DROPPED, 3: "untagged", 10: 10, 11: 11, 12: 12, 4: 4, 5: 5,
             100: 100, 1: DROPPED},
        )


class RuleTests(SynchronousTestCase):
    def test_options(self) -> None:
        """
        Numbers are C{strtol(.., 0) & 0xfff}; prefixes of option names work.
        """
        self.assertEqual(
            rules("vlan://0x10/un=010/t=1-2.3::4-0x20/x/q{sw}"),
            VlanRules(untagged=16, untag=8, tags=((1, 2), (3, 3), (4, 32)),
                      trunk=True, qinq=True),
        )
        self.assertEqual(rules("vlan://{sw}"), VlanRules())
        self.assertEqual(rules("vlan://-1{sw}").untagged, 4095)
        self.assertEqual(rules("vlan://4097{sw}").untagged, 1)
        self.assertEqual(rules("vlan://3/ad{sw}").qinq, True)
        self.assertEqual(rules("vlan://3/u=7{sw}").untag, 7)
        self.assertEqual([v for v in range(4096) if not vlanok(v)], [0, 1, 4095])

    def test_unknownOption(self) -> None:
        error = self.assertRaises(VNLError, rules, "vlan://3/tagz=4{sw}")
        self.assertIn("unknown key: tagz", str(error))

    def test_bracketFormIsNotSpecial(self) -> None:
        """
        The man page's C{vlan://3[untag=4/tag=10]} does not set untag, as in
        C: ADDR is C{3[untag=4} (3) and the tag list C{10]} (10).
        """
        self.assertEqual(rules("vlan://3[untag=4/tag=10]{sw}"),
                         VlanRules(untagged=3, untag=0, tags=((10, 10),)))

    def test_priorityCleared(self) -> None:
        """
        A remapped tag is a new TCI: priority and DEI are cleared.
        """
        r = rules("vlan://3/tag=11-12{sw}")
        self.assertEqual(r.toNetwork(tagged(11, pcp=5)), tagged(12))
        self.assertEqual(r.toVM(tagged(12, pcp=7)), tagged(11))

    def test_priorityTaggedVidZero(self) -> None:
        """
        With C{untag} 0, a priority-tagged (VID 0) frame from the VM leaves
        untagged, as in C.
        """
        self.assertEqual(rules("vlan://3{sw}").toNetwork(tagged(0, pcp=3)), untagged())

    def test_dropUntagged(self) -> None:
        """
        UNTAGGED 4095: untagged VM frames are dropped; no UNTAGGED but an
        untag VLAN: likewise; neither: they pass unchanged.
        """
        self.assertIsNone(rules("vlan://4095/tag=10{sw}").toNetwork(untagged()))
        self.assertIsNone(rules("vlan:///untag=4{sw}").toNetwork(untagged()))
        self.assertEqual(rules("vlan:///tag=10{sw}").toNetwork(untagged()), untagged())
        self.assertEqual(rules("vlan:///tag=10{sw}").toVM(untagged()), untagged())

    def test_shortFrames(self) -> None:
        """
        Frames shorter than 14 bytes: dropped on the way out, passed through
        on the way in (as in C); truncated tags are dropped.
        """
        r = rules("vlan://3/tag=10{sw}")
        self.assertIsNone(r.toNetwork(b"x" * 13))
        self.assertEqual(r.toVM(b"x" * 13), b"x" * 13)
        self.assertIsNone(r.toVM(DST + SRC + b"\x81\x00\x00"))

    def test_realLength(self) -> None:
        """
        Re-mapped frames keep their real length: the C plugin returns its
        buffer size (9234) for them instead, which is a bug not replicated.
        """
        r = rules("vlan://3/tag=10:11-12{sw}")
        self.assertEqual(len(r.toVM(tagged(12))), len(tagged(12)))
        self.assertEqual(len(r.toVM(tagged(10))), len(tagged(10)))

    def test_qinq(self) -> None:
        """
        With qinq the tag is 802.1ad; an 802.1Q-tagged frame counts as
        untagged, so the service tag goes on top of it.
        """
        r = rules("vlan://5/qinq{sw}")
        self.assertEqual(r.toNetwork(untagged()), tagged(5, TPID_8021AD))
        inner = tagged(4)
        outer = DST + SRC + struct.pack(">HH", TPID_8021AD, 5) + inner[12:]
        self.assertEqual(r.toNetwork(inner), outer)
        self.assertEqual(r.toVM(outer), inner)
        self.assertIsNone(r.toVM(tagged(4)))
        self.assertIsNone(r.toVM(tagged(6, TPID_8021AD)))
        self.assertIsNone(r.toNetwork(tagged(6, TPID_8021AD)))


@implementer(IPlugin, IVdeBackend)
class RecordingVlan(VlanBackend):
    def __init__(self) -> None:
        self.calls = []

    def open(self, reactor, vnl, description, args, registry):
        self.calls.append((vnl, description, args, registry))
        return super().open(reactor, vnl, description, args, registry)


class NestedOpenTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.memory = MemoryBackend()
        self.vlan = RecordingVlan()
        self.registry = Registry([self.vlan, AgnoBackend(), self.memory])

    def open(self, vnl: str, description: str = "test", args: OpenArgs = OpenArgs()):
        plug = self.successResultOf(self.registry.open(reactor, vnl, description, args))
        self.addCleanup(plug.close)
        return plug

    def test_sameRegistryDescriptionArgs(self) -> None:
        """
        The nested VNL is opened through the same registry, with the same
        (decorated once, not twice) description and the same open args.
        """
        args = OpenArgs(port=5, group="kvm", mode=0o770)
        self.open("vlan://3{mem://x}", "vm1", args)
        [(vnl, description, gotArgs, registry)] = self.vlan.calls
        [(nested, nestedDescription, nestedArgs, nestedRegistry)] = self.memory.calls
        self.assertEqual(description, decorate("vm1"))
        self.assertEqual(nestedDescription, description)
        self.assertEqual(nestedDescription.count("user="), 1)
        self.assertIs(nestedArgs, args)
        self.assertIs(nestedRegistry, self.registry)
        self.assertIs(registry, self.registry)
        self.assertEqual((nested.scheme, nested.text), ("mem", "mem://x"))

    def test_defaultNetwork(self) -> None:
        """
        Without C{{...}} the nested network is the default network.
        """
        home = self.mktemp()
        os.mkdir(home)
        self.patch(os, "environ", dict(os.environ, HOME=home))
        self.open("vlan://3")
        [(nested, _, _, _)] = self.memory.calls
        self.assertEqual((nested.scheme, nested.text), ("vde", ""))

    def test_recursive(self) -> None:
        """
        C{vlan://4{vlan://5/qinq{...}}}: VLAN 4 inside the 802.1ad service
        VLAN 5, both ways.
        """
        plug = self.open("vlan://4{vlan://5/qinq{mem://'x{y}'}}")
        self.assertEqual([c[0].text for c in self.vlan.calls],
                         ["vlan://4{vlan://5/qinq{mem://'x{y}'}}", "vlan://5/qinq{mem://'x{y}'}"])
        self.assertEqual(self.memory.calls[0][0].text, "mem://'x{y}'")
        self.assertEqual(self.vlan.calls[1][1], self.vlan.calls[0][1])
        collector = FrameCollector()
        plug.startReceiving(collector)
        plug.send(untagged())
        wire = DST + SRC + struct.pack(">HHHH", TPID_8021AD, 5, 0x8100, 4) + BODY
        far = self.memory.far[0]
        got = FrameCollector()
        far.startReceiving(got)
        self.assertEqual(got.frames, [wire])
        far.send(wire)
        far.send(tagged(4))  # no service tag: dropped by the outer plug
        self.assertEqual(collector.frames, [untagged()])

    def test_plug(self) -> None:
        """
        The plug tags what is sent, untags what arrives, and counts.
        """
        plug = self.open("vlan://3/tag=10{mem://}")
        far = self.memory.far[0]
        got = FrameCollector()
        far.startReceiving(got)
        collector = FrameCollector()
        plug.startReceiving(collector)
        plug.send(untagged())
        plug.send(tagged(11))
        far.send(tagged(3))
        far.send(untagged())
        far.send(tagged(10))
        self.assertEqual(got.frames, [tagged(3)])
        self.assertEqual(collector.frames, [untagged(), tagged(10)])
        self.assertEqual((plug.stats.sent, plug.stats.dropped, plug.stats.received), (1, 1, 2))
        self.assertEqual(plug.description, "vlan://3/tag=10{mem://}")

    def test_flowControl(self) -> None:
        """
        Pausing the vlan plug pauses the nested one; a producer registered
        on it is paused while the nested plug's peer is full.
        """
        plug = self.open("vlan://3{mem://}")
        inner, far = self.memory.plugs[0], self.memory.far[0]
        collector = FrameCollector()
        plug.startReceiving(collector)
        plug.pauseProducing()
        self.assertTrue(inner.paused)
        far.send(tagged(3))
        self.assertEqual(collector.frames, [])
        plug.resumeProducing()
        self.assertEqual(collector.frames, [untagged()])

        class Producer:
            paused = False

            def pauseProducing(self):
                self.paused = True

            def resumeProducing(self):
                self.paused = False

        producer = Producer()
        plug.registerProducer(producer, True)
        plug.send(untagged())
        plug.send(untagged())
        self.assertTrue(producer.paused)  # far holds 2 (its capacity), unread
        got = FrameCollector()
        far.startReceiving(got)
        self.assertFalse(producer.paused)
        self.assertEqual(got.frames, [tagged(3)] * 2)
        plug.unregisterProducer()
        self.assertIsNone(inner.producer)

    def test_close(self) -> None:
        """
        Closing the plug closes the nested one; the nested network going
        away closes the plug with its reason.
        """
        plug = self.open("vlan://3{mem://}")
        collector = FrameCollector()
        plug.startReceiving(collector)
        plug.close()
        self.assertTrue(self.memory.plugs[0].closed)
        collector.reason.trap(PlugClosed)

        plug = self.open("vlan://3{mem://}")
        collector = FrameCollector()
        plug.startReceiving(collector)
        self.memory.far[1].close()
        self.assertTrue(plug.closed)
        self.assertIn("far closed", str(collector.reason.value))

    def test_nestedFailure(self) -> None:
        """
        A nested VNL that cannot be opened fails the open, naming it.
        """
        failure = self.failureResultOf(self.registry.open(reactor, "vlan://3{nope://}"))
        self.assertIn("nope", str(failure.value))


Q, AD = 0x8100, TPID_8021AD


def wireFrame(src: int, n: int, *tags: tuple[int, int]) -> bytes:
    """
    L{testFrame} C{n} from C{mac(src)} with C{tags} ((TPID, VID), outermost
    first) inserted.
    """
    frame = testFrame(src, n)
    header = b"".join(struct.pack(">HH", tpid, vid) for tpid, vid in tags)
    return frame[:12] + header + frame[12:]


class InteropTests(HubTestCase):
    """
    The C libvdeplug_vlan and ours, both as C{vde_plug VNL} processes on a
    C hub, with the same VNL: the observer sees the same bytes from both,
    both deliver the same frames to their user, and each understands the
    other's frames.  One test per row of the spec's matrix, and qinq.
    """

    timeout = 30

    async def compare(self, vnl: str, probe: tuple, fromVM: list, fromNet: list,
                      wire: list[int], delivered: list[int]) -> None:
        """
        @param probe: the tags of a network frame both plugs deliver (used
            to know they are up).
        @param fromVM: tags of the frames the plugs' users send, numbered
            from 1; the last one must reach the wire.
        @param fromNet: tags of the frames the observer sends, numbered from
            101; the last one must be delivered.
        @param wire: the numbers that reach the wire.
        @param delivered: the numbers the plugs deliver.
        """
        await self.startHub()
        config = vnl.replace("HUB", "vde://" + self.hubDir)
        c = cPlug(self, f"C vde_plug {config}", config)
        ours = ourPlug(self, f"our vde_plug {config}", config)
        procs = [c, ours]

        await self.probeUntilUp(procs, lambda: wireFrame(9, 0, *probe))

        # The users' frames: the same bytes on the wire from C (source 1)
        # and from ours (source 2).
        for src, proc in ((1, c), (2, ours)):
            proc.send(*[wireFrame(src, n, *tags) for n, tags in enumerate(fromVM, 1)])
        last = len(fromVM)
        await until(lambda: all(numberOf(f) == last for f in
                                (self.seenFrom(1)[-1:] + self.seenFrom(2)[-1:])) and
                    self.seenFrom(1) and self.seenFrom(2), "the frames on the wire",
                    procs=procs)
        fromC = [f[:6] + mac(0) + f[12:] for f in self.seenFrom(1)]
        fromOurs = [f[:6] + mac(0) + f[12:] for f in self.seenFrom(2)]
        self.assertEqual(fromOurs, fromC)
        self.assertEqual([numberOf(f) for f in fromC], wire)

        # The network's frames: delivered alike (but for the C plugin's
        # padding of re-mapped frames to its buffer size, 9234 bytes).
        for n, tags in enumerate(fromNet, 101):
            self.observer.send(wireFrame(9, n, *tags))
        last = 100 + len(fromNet)
        await until(lambda: numbers(ours, 9)[-1:] == [last] and numbers(c, 9)[-1:] == [last],
                    "the network's frames", procs=procs)
        await deferLater(reactor, 0.1)  # anything after the last one?

        def same(cFrames, ourFrames):
            self.assertEqual(len(cFrames), len(ourFrames))
            for cFrame, ourFrame in zip(cFrames, ourFrames):
                self.assertEqual(cFrame[: len(ourFrame)], ourFrame)
                self.assertIn(len(cFrame), (len(ourFrame), 9234))

        ourNet = [f for f in ours.frames if f[6:12] == mac(9) and numberOf(f) != 0]
        cNet = [f for f in c.frames if f[6:12] == mac(9) and numberOf(f) != 0]
        same(cNet, ourNet)
        self.assertEqual([numberOf(f) for f in ourNet], delivered)

        # Each understood the other's frames: ours delivers what C sent as C
        # delivers what ours sent.
        same([f[:6] + mac(0) + f[12:] for f in c.frames if f[6:12] == mac(2)],
             [f[:6] + mac(0) + f[12:] for f in ours.frames if f[6:12] == mac(1)])

    def test_untaggedVlanOnly(self) -> None:
        return self.compare(
            "vlan://3{HUB}", ((Q, 3),),
            [((Q, 10),), ((Q, 3),), ()], [(), ((Q, 10),), ((Q, 11),), ((Q, 3),)],
            wire=[3], delivered=[104])

    def test_untagAndMappedTags(self) -> None:
        return self.compare(
            "vlan://3/untag=4/tag=10:11-12{HUB}", ((Q, 3),),
            [((Q, 10),), ((Q, 11),), ((Q, 12),), ((Q, 5),), ((Q, 4),), ()],
            [((Q, 11),), (), ((Q, 10),), ((Q, 12),), ((Q, 4),), ((Q, 3),)],
            wire=[1, 2, 5, 6], delivered=[102, 103, 104, 106])

    def test_oneCharacterTagList(self) -> None:
        """
        C{tag=5} is ignored by both.
        """
        return self.compare(
            "vlan://3/tag=5{HUB}", ((Q, 3),),
            [((Q, 5),), ((Q, 10),), ()], [((Q, 5),), (), ((Q, 3),)],
            wire=[3], delivered=[103])

    def test_trunk(self) -> None:
        return self.compare(
            "vlan://3/tag=10/trunk{HUB}", ((Q, 3),),
            [((Q, 10),), ((Q, 1),), ((Q, 4),), ((Q, 100),), ((Q, 4095),), ()],
            [(), ((Q, 1),), ((Q, 10),), ((Q, 11),), ((Q, 5),), ((Q, 100),), ((Q, 3),)],
            wire=[1, 3, 4, 6], delivered=[103, 104, 105, 106, 107])

    def test_qinqNested(self) -> None:
        """
        VLAN 4 inside the 802.1ad service VLAN 5.
        """
        return self.compare(
            "vlan://4{vlan://5/qinq{HUB}}", ((AD, 5), (Q, 4)),
            [((Q, 4),), ((Q, 10),), ()],
            [((Q, 4),), ((AD, 5),), ((AD, 6), (Q, 4)), ((AD, 5), (Q, 4))],
            wire=[3], delivered=[104])
