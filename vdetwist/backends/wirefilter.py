"""
C{wirefilter://[OPTION/...]{NESTED-VNL}}: a link that loses, delays,
duplicates, throttles and damages frames, between the plug's user and a
nested network, compatible with libvdeplug_wirefilter.

Frames the user sends go left to right (C{LR}), frames from the network
right to left (C{RL}).  The engine is L{vdetwist.lab.filter}; C{mgmt=}
serves wirefilter's console (L{vdetwist.lab.console}) to change every
value live, Markov mode included.
"""

from __future__ import annotations

from typing import Optional

from twisted.internet.defer import maybeDeferred
from twisted.plugin import IPlugin
from zope.interface import implementer

from vdetwist.errors import VdeError, VNLError
from vdetwist.lab.filter import DEFAULT_LIMIT, LR, RL
from vdetwist.lab.runtime import FilterRuntime
from vdetwist.lab.wirevalue import WireValueError
from vdetwist.interfaces import IVdeBackend
from vdetwist._transport.nested import TransformPlug, openNested
from vdetwist.plug import ETH_HDRLEN, VDE_ETHBUFSIZE
from vdetwist.reference import Option, SchemeReference
from vdetwist.vnl import parseOctal, parsePath

_VALUE = "[LR\\|RL]N[+J][K\\|M\\|G][U\\|N]"
#: The options that set a filter parameter, and the parameter.
_PARAMETERS = {
    "delay": "delay", "dup": "dup", "loss": "loss", "lostburst": "lostburst", "mtu": "mtu",
    "bufsize": "chanbufsize", "bandwidth": "bandwidth", "speed": "speed", "noise": "noise",
    "reorder": "reorder", "corrupt": "corrupt", "rate": "bandwidth",
}

#: The options: libvdeplug_wirefilter's in C's order (a key names the first
#: entry it abbreviates), then tc-netem's and vdetwist's.
WIREFILTER_OPTIONS = (
    "delay", "dup", "loss", "lostburst", "mtu", "bufsize", "bandwidth",
    "speed", "nofifo", "noise", "blink", "blinkid", "mgmt", "mgmtmode", "rc",
    "pidfile", "reorder", "corrupt", "rate", "limit", "seed",
)

REFERENCE = SchemeReference(
    scheme="wirefilter",
    synopsis="wirefilter://[[OPTION/...]][{NESTED-VNL}]",
    description=(
        "Link emulation between the plug's user and the NESTED-VNL network (the "
        "default network without `{...}`), as vde2's `wirefilter` and "
        "libvdeplug_wirefilter: frames the user sends go left to right (LR), frames "
        "from the network right to left (RL). A value is `[LR|RL]N[+J][K|M|G][U|N]`: "
        "`LR`/`RL` set one direction (both without), `+J` a random variation drawn "
        "for each frame, uniform (`U`, the default) or normal (`N`, sigma J/3), "
        "`K`/`M`/`G` multiply by 2^10/2^20/2^30; several settings may be joined by "
        "`:` (`loss=LR10:RL20`). A bad value is an error naming the option. The "
        "queue of each direction is bounded (`bufsize` bytes, `limit` frames, 16 MiB "
        "at most): what does not fit is dropped. Markov mode (several link states "
        "and their transitions) is set through the console (`mgmt=`) or an rc file "
        "(`rc=`), with wirefilter's commands (`markov-numnodes`, `setedge`, ...; "
        "`man wirefilter`)."
    ),
    grammar="path",
    nested=True,
    table=WIREFILTER_OPTIONS,
    options=(
        Option("delay", "Extra delay in milliseconds.", _VALUE, "0"),
        Option("dup", "Percent of frames duplicated (again and again while the draw "
               "says so; at most 99).", _VALUE, "0"),
        Option("loss", "Percent of frames lost.", _VALUE, "0"),
        Option("lostburst", "Mean length of lost bursts: loss by the Gilbert model "
               "(the loss rate stays `loss`).", _VALUE, "0 (independent losses)"),
        Option("mtu", "Frames longer than this (bytes) are dropped.", _VALUE, "none"),
        Option("bufsize", "Channel buffer: bytes queued at most in a direction; more "
               "is dropped.", _VALUE, "none"),
        Option("bandwidth", "Channel bandwidth in bytes/s: frames are delivered no "
               "faster, the sender is not held up.", _VALUE, "unlimited"),
        Option("speed", "Interface speed in bytes/s: each frame takes its transmission "
               "time (here as `bandwidth`: a plug cannot hold its user's sends up).",
               _VALUE, "unlimited"),
        Option("nofifo", "Frames may overtake each other (different delays)."),
        Option("noise", "Bits damaged per megabyte.", _VALUE, "0"),
        Option("blink", "Send `ID LR|RL LENGTH` to this unix datagram socket for each "
               "frame.", "PATH"),
        Option("blinkid", "The ID of blink messages.", "ID", "the pid, 6 digits"),
        Option("mgmt", "Serve wirefilter's management console on this unix socket "
               "(`vdeterm PATH`); every value can be shown and changed live.", "PATH"),
        Option("mgmtmode", "Access mode of the console socket (octal).", "MODE", "0700"),
        Option("rc", "Run this file of console commands at open (Markov mode). A "
               "failing command fails the open, naming the line.", "PATH"),
        Option("pidfile", "Write the pid to this new file (removed at close).", "PATH"),
        Option("reorder", "As tc-netem's: percent of delayed frames sent at once, "
               "ahead of the others.", _VALUE, "0"),
        Option("corrupt", "As tc-netem's: percent of frames with one bit flipped.",
               _VALUE, "0"),
        Option("rate", "As tc-netem's rate: the same as `bandwidth`.", _VALUE, "unlimited"),
        Option("limit", "As tc-netem's: frames queued at most in a direction.", "N",
               str(DEFAULT_LIMIT)),
        Option("seed", "Seed of the random draws, to replay a run.", "N", "random"),
    ),
    examples=(
        ("wirefilter://[loss=20/delay=40+5N/bandwidth=LR1M]{vde:///tmp/sw}",
         "20% loss, 35-45 ms delay, 1 MiB/s from the user to the switch"),
        ("wirefilter://[delay=RL100/mgmt='/tmp/wf.mgmt']{vxvde://234.0.0.1}",
         "100 ms on received frames; `vdeterm /tmp/wf.mgmt` changes it live"),
        ("wirefilter://[rc='/etc/vde/markov.rc']{vde:///tmp/sw}",
         "a Markov chain from a file (a path holding `/` is quoted)"),
    ),
    differences=(
        "A malformed or out-of-range value (`loss=abc`, `delay=-5`) is an error "
        "naming the option; the C plugin reads it as 0 or as it comes.",
        "Options `reorder`, `corrupt`, `rate`, `limit`, `seed`, and several "
        "settings in one value joined by `:`, are vdetwist's.",
        "Queues are bounded; `speed` cannot hold the user's sends up, so it paces "
        "like `bandwidth`.",
    ),
    manual="libvdeplug_wirefilter",
)


class WirefilterPlug(TransformPlug):
    """
    A plug whose frames cross a L{vdetwist.lab.filter.WireFilter} both ways.
    """

    def __init__(self, description: str, inner, runtime: FilterRuntime) -> None:
        super().__init__(description, inner)
        self.runtime = runtime
        runtime.connect(self.deliver)

    def deliver(self, direction: int, frame: bytes) -> None:
        if self.closed:
            return
        if direction == LR:
            self.stats.sent += 1
            self.inner.send(frame)
        else:
            self.stats.received += 1
            self.receiver.frameReceived(frame)

    def send(self, frame: bytes) -> None:
        if self.closed or not ETH_HDRLEN <= len(frame) <= VDE_ETHBUFSIZE:
            self.stats.dropped += 1
            return
        self.runtime.filter.receive(LR, frame)

    def _fromInner(self, frame: bytes) -> None:
        self.runtime.filter.receive(RL, frame)

    def _release(self) -> None:
        self.runtime.close()
        super()._release()


def _positiveInt(vnl: str, name: str, value: str) -> int:
    try:
        number = int(value, 10)
    except ValueError:
        number = -1
    if number < (1 if name == "limit" else 0):
        raise VNLError(vnl, name, f"{name}={value}: give a whole number"
                       + (" above 0" if name == "limit" else ""))
    return number


def configure(reactor, vnl, options: dict[str, str]) -> FilterRuntime:
    """
    A filter runtime set as C{options} (a C{wirefilter://} VNL's) say.

    @raise VNLError: a bad option value, naming the option.
    @raise VdeError: the console socket, rc file or pid file failed.
    """
    text = vnl.text
    seed = _positiveInt(text, "seed", options["seed"]) if "seed" in options else None
    limit = _positiveInt(text, "limit", options["limit"]) if "limit" in options else DEFAULT_LIMIT
    runtime = FilterRuntime(reactor, seed=seed, limit=limit)
    try:
        for option, value in options.items():
            parameter = _PARAMETERS.get(option)
            if parameter is None:
                continue
            for setting in value.split(":"):
                try:
                    runtime.filter.set(parameter, setting)
                except WireValueError as e:
                    message = str(e).replace(f"{parameter}:", f"{option}=", 1)
                    raise VNLError(text, option, message) from None
        runtime.filter.nofifo = "nofifo" in options
        if "blink" in options:
            runtime.setBlink(options["blink"], options.get("blinkid"))
        if "rc" in options:
            runtime.runRcfile(options["rc"])
        if "mgmt" in options:
            mode = parseOctal(text, "mgmtmode", options["mgmtmode"]) if "mgmtmode" in options else 0o700
            runtime.listen(options["mgmt"], mode)
        if "pidfile" in options:
            runtime.writePidfile(options["pidfile"])
    except VdeError as e:
        runtime.close()
        if e.vnl is None:
            e.vnl = text
        raise
    return runtime


def parseWirefilter(vnl) -> tuple[dict[str, str], Optional[str]]:
    """
    The options and the nested VNL (C{None}: the default network) of a
    C{wirefilter://} VNL.

    @raise VNLError: an unknown option, or text before C{[}.
    """
    prefix, nested = vnl.splitNested()
    path, options = parsePath(prefix, WIREFILTER_OPTIONS, vnl.text)
    if path:
        raise VNLError(vnl.text, path, f"{path!r}: wirefilter:// takes options in [...], no path")
    return options, nested


@implementer(IPlugin, IVdeBackend)
class WirefilterBackend:
    schemes = ("wirefilter",)
    summary = "link emulation over a nested VNL (wirefilter://[loss=20/delay=40]{vde:///tmp/sw})"
    references = (REFERENCE,)

    def open(self, reactor, vnl, description, args, registry):
        options, nested = parseWirefilter(vnl)
        runtime = configure(reactor, vnl, options)
        opened = maybeDeferred(openNested, reactor, registry, nested, description, args)

        def failed(reason):
            runtime.close()
            return reason

        return opened.addCallbacks(lambda inner: WirefilterPlug(vnl.text, inner, runtime), failed)
