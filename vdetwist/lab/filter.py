"""
The wirefilter engine, without I/O: a two-way link that loses, delays,
duplicates, throttles and damages the frames crossing it, as vde2's
C{wirefilter} does, plus tc-netem's reordering and corruption.

Frames come in with L{WireFilter.receive}C{(direction, frame)} and leave
through the C{deliver(direction, frame)} callable, at once or later: time
is the injected C{IReactorTime}, randomness the injected C{random.Random},
so tests drive both exactly.  L{LR} is left to right (for a nested VNL: from
the plug's user to the network), L{RL} the other way.

What happens to a frame, in wirefilter's order, with the values of the
current Markov node (each drawn per frame when it has a jitter):

  1. C{mtu}: a frame longer than it is dropped;
  2. C{loss} (percent): dropped at random, or, when C{lostburst} is set, by
     the Gilbert model: a two-state chain entering the lossy state with
     probability C{loss/(lostburst*(1-loss))} and leaving it with
     C{1/lostburst}, so the loss rate is C{loss} and the lost bursts are
     C{lostburst} frames long on average;
  3. C{dup} (percent): another copy, as long as the draw says so;
  4. for each copy: C{chanbufsize} (bytes): dropped if the delay queue of
     its direction would exceed it; C{speed} and C{bandwidth} (bytes/s):
     delivered once the frames before it have had their transmission time
     (C{speed} also tells the reader when to read again, see
     L{WireFilter.readableAt}); C{delay} (ms) on top; C{reorder} (percent,
     as netem's): a delayed copy is sent at once instead;
  5. on the way out: C{noise} (bits flipped per megabyte, on average) and
     C{corrupt} (percent of frames with one bit flipped).

Without C{nofifo} a frame never overtakes an earlier one of its direction.

The queue is bounded: past C{limit} frames or L{MAX_QUEUE_BYTES} bytes a
direction drops what would be queued and counts it (wirefilter's queue has
no bound).  Other differences from wirefilter: sizes are the frame's own
(wirefilter adds the 2-byte length of its stream framing to each frame's
size for C{mtu}, C{chanbufsize}, C{bandwidth} and C{speed}); delays are not
rounded to milliseconds; the fifo order is kept per direction (wirefilter
keeps one order for both, so a long delay one way holds the other way up).
"""

from __future__ import annotations

import heapq
import itertools
import random
from typing import Callable, Optional

from twisted.internet.interfaces import IDelayedCall, IReactorTime

from vdetwist.lab.wirevalue import NORMAL, WireValue, WireValueError, parseWireValue

__all__ = [
    "LR",
    "RL",
    "PARAMETERS",
    "ALIASES",
    "MAX_QUEUE_BYTES",
    "DEFAULT_LIMIT",
    "MarkovNode",
    "DirectionStats",
    "WireFilter",
]

LR, RL = 0, 1
#: The parameters of a Markov node, in wirefilter's order, then netem's.
PARAMETERS = (
    "loss", "lostburst", "delay", "dup", "bandwidth", "speed",
    "chanbufsize", "noise", "mtu", "reorder", "corrupt",
)
#: Other names of parameters (wirefilter's console, libvdeplug_wirefilter,
#: tc-netem).
ALIASES = {"band": "bandwidth", "capacity": "chanbufsize", "bufsize": "chanbufsize",
           "rate": "bandwidth"}
#: Frames one direction may hold queued, by default (tc-netem's default
#: C{limit} is 1000; this one leaves room for a 40 ms delay at 25k
#: frames/s).
DEFAULT_LIMIT = 10000
#: Bytes one direction may hold queued, whatever the limit.
MAX_QUEUE_BYTES = 1 << 24
#: Copies of one frame C{dup} may make.
MAX_COPIES = 100
_MEGA = 1 << 20
_ZERO = WireValue()
# Slack when comparing times, so that a frame due "now" on a float clock
# is not left for one more timer round.
_EPSILON = 1e-9


class MarkovNode:
    """
    One state of the link: a name and a L{WireValue} per parameter and
    direction (C{values[name][direction]}).
    """

    __slots__ = ("name", "values", "idle")

    def __init__(self) -> None:
        self.name = ""
        self.values: dict[str, list[WireValue]] = {p: [_ZERO, _ZERO] for p in PARAMETERS}
        #: Per direction, whether nothing at all happens to its frames (the
        #: fast path).
        self.idle = [True, True]

    def setValue(self, name: str, direction: int, value: WireValue) -> None:
        self.values[name][direction] = value
        self.idle[direction] = all(v[direction] == _ZERO for v in self.values.values())


class DirectionStats:
    """
    What happened to the frames of one direction.
    """

    __slots__ = ("received", "delivered", "lost", "oversize", "overflow",
                 "duplicated", "reordered", "corrupted")

    received: int
    delivered: int
    lost: int
    oversize: int
    overflow: int
    duplicated: int
    reordered: int
    corrupted: int

    def __init__(self) -> None:
        for name in self.__slots__:
            setattr(self, name, 0)

    def __repr__(self) -> str:
        fields = " ".join(f"{n}={getattr(self, n)}" for n in self.__slots__)
        return f"<DirectionStats {fields}>"


class WireFilter:
    """
    The link.

    @param clock: the reactor's time (delays, rates, the Markov chain).
    @param deliver: C{(direction, frame)}, called for each frame leaving.
    @param rng: the randomness (seed it to replay a run).
    @param limit: the frames one direction may hold queued.

    @ivar nofifo: frames may overtake each other (wirefilter's C{-N}).
    @ivar nodes: the Markov nodes; node 0 is the whole link until there
        are more.
    @ivar weights: C{weights[i][j]}, the percent chance of moving from
        node i to node j at each Markov step; C{weights[i][i]} is what the
        others leave.
    @ivar current: the current node.
    @ivar markovTime: milliseconds between Markov steps.
    @ivar observers: called with C{(old, new)} when the current node changes
        by a Markov step.
    @ivar stats: a L{DirectionStats} per direction.
    @ivar queuedBytes: bytes waiting in each direction's queue.
    """

    def __init__(self, clock: IReactorTime, deliver: Callable[[int, bytes], None],
                 rng: Optional[random.Random] = None, limit: int = DEFAULT_LIMIT) -> None:
        self.clock = clock
        self.deliver = deliver
        self.rng = random.Random() if rng is None else rng
        self.limit = limit
        self.nofifo = False
        self.nodes = [MarkovNode()]
        self.weights = [[100.0]]
        self.current = 0
        self.markovTime = 100.0
        self.observers: list[Callable[[int, int], None]] = []
        self.stats = (DirectionStats(), DirectionStats())
        self.queuedBytes = [0, 0]
        self._queuedFrames = [0, 0]
        self._queue: list[tuple[float, int, int, bytes]] = []
        self._order = itertools.count()
        self._lastDue = [0.0, 0.0]
        self._nextBand = [0.0, 0.0]
        self._nextSpeed = [0.0, 0.0]
        self._faulty = [False, False]
        self._timer: Optional[IDelayedCall] = None
        self._markovCall: Optional[IDelayedCall] = None

    # -- settings --------------------------------------------------------

    def set(self, name: str, text: str) -> None:
        """
        Set parameter C{name} (or an alias) from a value in wirefilter's
        syntax, e.g. C{set("delay", "LR40+5N[2]")}.

        @raise WireValueError: an unknown parameter, a bad value or node.
        """
        name = ALIASES.get(name, name)
        if name not in PARAMETERS:
            raise WireValueError(f"{name}: no such parameter (known: {', '.join(PARAMETERS)})")
        setting = parseWireValue(name, text)
        node = 0 if setting.node is None else setting.node
        if not 0 <= node < len(self.nodes):
            raise WireValueError(
                f"{name}: {text!r}: there is no Markov node {node}"
                f" (nodes 0 to {len(self.nodes) - 1}; markov-numnodes adds more)"
            )
        for direction in setting.directions:
            self.nodes[node].setValue(name, direction, setting.value)

    def value(self, name: str, direction: int, node: Optional[int] = None) -> WireValue:
        """
        The setting of C{name} in C{direction} on C{node} (the current one
        by default).
        """
        node = self.current if node is None else node
        return self.nodes[node].values[ALIASES.get(name, name)][direction]

    # -- the Markov chain --------------------------------------------------

    def resize(self, count: int) -> None:
        """
        Make the chain C{count} nodes long (C{markov-numnodes}): new nodes
        change nothing and are only left through their own loop; edges to
        removed nodes go back to the loop; node 0 becomes current if the
        current one is removed.  The chain restarts.
        """
        if count < 1:
            raise WireValueError(f"markov-numnodes: {count} nodes: at least 1 is needed")
        old = len(self.nodes)
        if count > old:
            self.nodes.extend(MarkovNode() for _ in range(count - old))
        else:
            del self.nodes[count:]
            if self.current >= count:
                self.current = 0
        kept = min(old, count)
        weights = [[0.0] * count for _ in range(count)]
        for i in range(kept):
            for j in range(kept):
                if i != j:
                    weights[i][j] = self.weights[i][j]
        self.weights = weights
        for i in range(count):
            self._loopback(i)
        self.startMarkov()

    def setEdge(self, source: int, target: int, weight: float) -> None:
        """
        The percent chance of moving from C{source} to C{target} at each
        step (C{setedge}); the loop of C{source} gets what is left.
        """
        count = len(self.nodes)
        if not (0 <= source < count and 0 <= target < count):
            raise WireValueError(f"setedge: {source},{target}: nodes go from 0 to {count - 1}")
        self.weights[source][target] = weight
        self._loopback(source)

    def _loopback(self, node: int) -> None:
        row = self.weights[node]
        row[node] = 100.0 - sum(w for j, w in enumerate(row) if j != node)

    def setCurrent(self, node: int) -> None:
        """
        Make C{node} current (C{markov-setnode}).
        """
        if not 0 <= node < len(self.nodes):
            raise WireValueError(
                f"markov-setnode: {node}: nodes go from 0 to {len(self.nodes) - 1}"
            )
        self.current = node

    def setMarkovTime(self, milliseconds: float) -> None:
        """
        Step the chain every C{milliseconds} (C{markov-time}); it restarts.
        """
        if not milliseconds > 0:
            raise WireValueError(f"markov-time: {milliseconds:g}: the period must be above 0 ms")
        self.markovTime = milliseconds
        self.startMarkov()

    def startMarkov(self) -> None:
        """
        (Re)start the chain: one step now, then one every C{markovTime} ms,
        while there is more than one node.
        """
        self._cancel("_markovCall")
        if len(self.nodes) > 1:
            self._markovStep()

    def _markovStep(self) -> None:
        old = self.current
        draw = self.rng.random() * 100
        count = len(self.nodes)
        new = old
        for j in range(count):
            new = (old + j) % count
            weight = self.weights[old][new]
            if draw <= weight:
                break
            draw -= weight
        self.current = new
        self._markovCall = self.clock.callLater(self.markovTime / 1000, self._markovStep)
        if new != old:
            for observer in list(self.observers):
                observer(old, new)

    # -- frames ------------------------------------------------------------

    def _draw(self, wv: WireValue) -> float:
        if wv.plus == 0:
            return wv.value
        if wv.alg == NORMAL:
            return self.rng.gauss(wv.value, wv.plus / 3)
        return wv.value + wv.plus * (self.rng.random() * 2 - 1)

    def receive(self, direction: int, frame: bytes) -> None:
        """
        A frame enters the link going C{direction}.
        """
        stats = self.stats[direction]
        stats.received += 1
        node = self.nodes[self.current]
        if node.idle[direction]:
            stats.delivered += 1
            self.deliver(direction, frame)
            return
        values = node.values
        mtu = values["mtu"][direction].minimum
        if mtu > 0 and len(frame) > mtu:
            stats.oversize += 1
            return
        if self._isLost(direction, values):
            stats.lost += 1
            return
        copies = 1
        dup = values["dup"][direction]
        if dup.maximum > 0:
            chance = self._draw(dup) / 100
            while copies < MAX_COPIES and self.rng.random() < chance:
                copies += 1
        stats.duplicated += copies - 1
        for _ in range(copies):
            if not self._send(direction, frame, values):
                stats.overflow += 1
                return

    def _isLost(self, direction: int, values) -> bool:
        loss = values["loss"][direction]
        if loss.minimum >= 100:
            return True
        burst = values["lostburst"][direction]
        if burst.maximum > 0:
            rate = min(self._draw(loss) / 100, 1.0)
            length = self._draw(burst)
            rng = self.rng.random()
            if self._faulty[direction]:
                if length <= 0 or rng < 1.0 / length:
                    self._faulty[direction] = False
            elif rate >= 1 or (length > 0 and rng < rate / (length * (1 - rate))):
                self._faulty[direction] = True
            return self._faulty[direction]
        self._faulty[direction] = False
        return loss.maximum > 0 and self.rng.random() < self._draw(loss) / 100

    def _send(self, direction: int, frame: bytes, values) -> bool:
        """
        Queue or deliver one copy; C{False} if it was dropped for room.
        """
        size = len(frame)
        capacity = values["chanbufsize"][direction]
        queued = self.queuedBytes[direction]
        if capacity.maximum > 0 and queued + size > self._draw(capacity):
            return False
        if self._queuedFrames[direction] >= self.limit or queued + size > MAX_QUEUE_BYTES:
            return False
        now = self.clock.seconds()
        wait = 0.0
        shaped = False
        for name, nexts in (("speed", self._nextSpeed), ("bandwidth", self._nextBand)):
            rate = values[name][direction]
            if rate.maximum > 0:
                perSecond = self._draw(rate)
                if perSecond <= 0:
                    return False
                nexts[direction] = max(now, nexts[direction]) + size / perSecond
                wait = nexts[direction] - now
                shaped = True
        delay = values["delay"][direction]
        if shaped or delay.maximum > 0:
            wait += max(self._draw(delay), 0.0) / 1000
        if wait > 0:
            reorder = values["reorder"][direction]
            if reorder.maximum > 0 and self.rng.random() < self._draw(reorder) / 100:
                self.stats[direction].reordered += 1
            else:
                self._enqueue(direction, frame, now + wait)
                return True
        self._output(direction, frame)
        return True

    def readableAt(self, direction: int) -> float:
        """
        When the reader of C{direction} should read again (C{speed}: the
        interface is busy sending until then; the past when it is free).
        A reader that reads sooner still has its frames sent in turn.
        """
        return self._nextSpeed[direction]

    def _enqueue(self, direction: int, frame: bytes, due: float) -> None:
        if not self.nofifo:
            due = max(due, self._lastDue[direction])
            self._lastDue[direction] = due
        self.queuedBytes[direction] += len(frame)
        self._queuedFrames[direction] += 1
        entry = (due, next(self._order), direction, frame)
        heapq.heappush(self._queue, entry)
        if self._queue[0] is entry:
            self._schedule()

    def _schedule(self) -> None:
        self._cancel("_timer")
        if self._queue:
            wait = max(self._queue[0][0] - self.clock.seconds(), 0.0)
            self._timer = self.clock.callLater(wait, self._flush)

    def _flush(self) -> None:
        self._timer = None
        queue = self._queue
        horizon = self.clock.seconds() + _EPSILON
        while queue and queue[0][0] <= horizon:
            _, _, direction, frame = heapq.heappop(queue)
            self.queuedBytes[direction] -= len(frame)
            self._queuedFrames[direction] -= 1
            self._output(direction, frame)
        self._schedule()

    def _output(self, direction: int, frame: bytes) -> None:
        values = self.nodes[self.current].values
        noise = values["noise"][direction]
        if noise.maximum > 0 and frame:
            perMega = self._draw(noise)
            bits = 0
            threshold = len(frame) * 8 * perMega
            while bits < len(frame) * 8 and self.rng.random() * 8 * _MEGA < threshold:
                bits += 1
            frame = self._flip(frame, bits)
        corrupt = values["corrupt"][direction]
        if corrupt.maximum > 0 and frame and self.rng.random() < self._draw(corrupt) / 100:
            self.stats[direction].corrupted += 1
            frame = self._flip(frame, 1)
        self.stats[direction].delivered += 1
        self.deliver(direction, frame)

    def _flip(self, frame: bytes, bits: int) -> bytes:
        if not bits:
            return frame
        damaged = bytearray(frame)
        for _ in range(bits):
            bit = self.rng.randrange(len(damaged) * 8)
            damaged[bit >> 3] ^= 1 << (bit & 7)
        return bytes(damaged)

    def queued(self) -> int:
        """
        Frames waiting in both directions' queues.
        """
        return len(self._queue)

    def _cancel(self, attribute: str) -> None:
        call = getattr(self, attribute)
        setattr(self, attribute, None)
        if call is not None and call.active():
            call.cancel()

    def stop(self) -> None:
        """
        Drop what is queued and stop the timers (the link is going away).
        """
        self._cancel("_timer")
        self._cancel("_markovCall")
        self._queue.clear()
        self.queuedBytes = [0, 0]
        self._queuedFrames = [0, 0]
