"""
C{clib://VNL}: open C{VNL} with the installed C library (libvdeplug4's
C{libvdeplug.so.2}, through ctypes) and plug its data descriptor into the
reactor.  A vdetwist extension, not a libvdeplug4 module.

C{VNL} is the raw rest of the string, handed to C{vde_open} unchanged:
C{clib://slirp:///tcpfwd=8080:10.0.2.15:80} runs libslirp through
libvdeplug_slirp, C{clib://vde:///tmp/sw} is the C C{vde://} client,
C{clib://} alone is the C library's default network.  Every C plugin
installed in C{/usr/lib/x86_64-linux-gnu/vdeplug/} (or on
C{$VDEPLUGIN_PATH}) is reachable this way, which makes this backend a
second implementation to test vdetwist's own backends against (the slirp
engine above all) and a way to use a C plugin vdetwist has no Python
equivalent for.  The registry opens a scheme no Python backend serves this
way by itself when L{findModule} finds its C plugin.

The library is loaded when a C{clib://} VNL is first opened, not on import:
without it the dropin still loads and opening fails with a L{VdeError}
(C{ELIBACC}) saying to C{apt-get install libvdeplug2}.

How the plug uses the library (as the C C{vde_plug} does):

  - C{vde_open} runs in the reactor's thread pool, because it blocks: the
    C{vde://} client waits for the switch's answer (which may come from a
    switch served by this very reactor) and C{cmd://} forks.  It has no
    timeout: a switch that accepts but never answers keeps a pool thread
    busy.  Cancelling the open closes the connection when it arrives.
  - The data descriptor (C{vde_datafd}) is read by the reactor; each wake-up
    calls C{vde_recv} into one preallocated buffer of 9234 bytes, ignores
    results shorter than 14 (the modules return 1 for internal events:
    a filtered frame, a slirp timer) and drains with C{poll(0)} between
    calls, at most L{READ_BATCH} frames per wake-up.  The descriptor is
    made non-blocking, so a module whose descriptor was ready for another
    reason returns an error instead of blocking the reactor.
  - The control descriptor (C{vde_ctlfd}, C{vde://} only), when there is
    one, is watched: any readability or hangup means the network went away
    (the switch closed or dropped the connection) and the plug closes with
    L{PlugLost}.  It is watched while the plug is paused too.
  - C{cmd://}: C{vde_recv} returning 0 means the command ended (the C
    module then prints C{VDE terminated} on stderr and swaps in an idle
    pipe); the plug closes with L{PlugLost}, where the C C{vde_plug} would
    keep running on a dead link.
  - C{vde_send} is called synchronously.  It does not block for the modules
    that send on the data descriptor itself (C{vde}, C{ptp}, C{udp},
    C{vxvde}, C{vxlan}, C{tap}, C{seqpacket}: the descriptor is
    non-blocking, a full peer queue is an error), but it B{can block} for
    modules that send elsewhere: C{cmd://} writes the child's stdin pipe
    (blocking while the child does not read), C{slirp://} hands the frame
    to libslirp under its lock.  A failed send drops the frame and counts
    it in C{stats.dropped}; frames above 9234 bytes are dropped too.
  - C{close()} calls C{vde_close} once, synchronously; for C{cmd://} that
    B{blocks until the command exits} (the C module waits for the child,
    which usually ends on the EOF of its stdin).

Descriptions: C{vde_open} decorates the description it is given (appending
C{" user=<name> pid=<pid>"}, and C{" SSH=<ip>"} under ssh) and offers no way
to turn that off, while the registry hands backends a description it has
already decorated the same way.  So the backend strips the registry's
decoration again (L{undecorated}) before calling C{vde_open}: a switch sees
C{"vdeplug: user=root pid=42"} once, exactly as from the C tools, not
C{"vdeplug: user=root pid=42 user=root pid=42"}.  A description that does not
end with this process's decoration is passed as given (and then shows two).
"""

from __future__ import annotations

import ctypes
import errno
import os
import re
import select
from typing import Mapping, Optional

from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.error import ConnectionDone
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger
from twisted.plugin import IPlugin
from twisted.python.failure import Failure
from zope.interface import implementer

from vdetwist._transport.fdplug import HARMLESS, READ_BATCH, FdPlug, FdReader
from vdetwist.errors import PlugLost, VdeError
from vdetwist.interfaces import IVdeBackend, IVdePlug
from vdetwist.plug import ETH_HDRLEN, VDE_ETHBUFSIZE
from vdetwist.reference import SchemeReference
from vdetwist.registry import MAX_DESCRIPTION, OpenArgs, decorate

REFERENCE = SchemeReference(
    scheme="clib",
    synopsis="clib://VNL",
    description=(
        "VNL opened by the installed C libvdeplug (`libvdeplug.so.2`, through "
        "ctypes), so every C plugin is reachable, including those vdetwist has no "
        "Python equivalent for. VNL is handed to `vde_open` unchanged; `clib://` "
        "alone is the C library's default network. Opening runs in the reactor's "
        "thread pool; sending and closing call the library directly, and can block "
        "for `cmd://` and `slirp://`. A scheme vdetwist has no backend for opens "
        "this way by itself when the C library has a plugin for it "
        "(`libvdeplug_SCHEME.so` in its plugin directories or `$VDEPLUGIN_PATH`); "
        "the log says so once. Needs `apt-get install libvdeplug2`."
    ),
    examples=(
        ("clib://vde:///tmp/sw", "the C `vde://` client"),
        ("clib://slirp:///tcpfwd=8080:10.0.2.15:80", "libslirp through libvdeplug_slirp"),
    ),
    differences=("A vdetwist scheme: the C library has none like it.",),
)

log = Logger()

#: The C library's soname (Debian package C{libvdeplug2}).
LIBRARY = "libvdeplug.so.2"
#: Where to tell the user to get it.
INSTALL_HINT = "apt-get install libvdeplug2"
#: libvdeplug4's interface version; the only one there is.
INTERFACE_VERSION = 1

_POLL_READY = select.POLLIN | select.POLLPRI | select.POLLHUP | select.POLLERR


class _OpenArgs(ctypes.Structure):
    """
    C{struct vde_open_args} (interface version 1).
    """

    _fields_ = [
        ("port", ctypes.c_int),
        ("group", ctypes.c_char_p),
        ("mode", ctypes.c_uint),  # mode_t
    ]


class CLibrary:
    """
    The functions of a loaded C{libvdeplug.so.2}, with their C signatures::

        VDECONN *vde_open_real(char *vnl, char *descr, int interface_version,
                               struct vde_open_args *open_args);
        ssize_t vde_recv(VDECONN *conn, void *buf, size_t len, int flags);
        ssize_t vde_send(VDECONN *conn, const void *buf, size_t len, int flags);
        int vde_datafd(VDECONN *conn);
        int vde_ctlfd(VDECONN *conn);
        int vde_close(VDECONN *conn);

    (C{vde_open} is a macro for C{vde_open_real(..., 1, ...)}.)  ctypes
    releases the GIL around each call.
    """

    def __init__(self, dll: ctypes.CDLL) -> None:
        self.dll = dll
        conn = ctypes.c_void_p
        self.open_real = dll.vde_open_real
        self.open_real.restype = conn
        self.open_real.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_int,
                                   ctypes.POINTER(_OpenArgs)]
        self.recv = dll.vde_recv
        self.recv.restype = ctypes.c_ssize_t
        self.recv.argtypes = [conn, ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
        self.send = dll.vde_send
        self.send.restype = ctypes.c_ssize_t
        self.send.argtypes = [conn, ctypes.c_char_p, ctypes.c_size_t, ctypes.c_int]
        for name in ("vde_datafd", "vde_ctlfd", "vde_close"):
            function = getattr(dll, name)
            function.restype = ctypes.c_int
            function.argtypes = [conn]
        self.datafd = dll.vde_datafd
        self.ctlfd = dll.vde_ctlfd
        self.close = dll.vde_close


_library: Optional[CLibrary] = None


def loadLibrary(name: Optional[str] = None) -> CLibrary:
    """
    The C library (loaded once; C{name} loads that file instead, uncached).

    @raise VdeError: (C{ELIBACC}) it cannot be loaded or lacks the API.
    """
    global _library
    if name is None and _library is not None:
        return _library
    path = LIBRARY if name is None else name
    try:
        library = CLibrary(ctypes.CDLL(path, use_errno=True))
    except (OSError, AttributeError) as e:
        raise VdeError(
            f"clib:// needs the C library {path}, which cannot be loaded ({e}): "
            f"{INSTALL_HINT}",
            errno.ELIBACC,
        ) from None
    if name is None:
        _library = library
    return library


class _DlInfo(ctypes.Structure):
    """
    C{Dl_info}, what C{dladdr} says of an address.
    """

    _fields_ = [
        ("dli_fname", ctypes.c_char_p),
        ("dli_fbase", ctypes.c_void_p),
        ("dli_sname", ctypes.c_char_p),
        ("dli_saddr", ctypes.c_void_p),
    ]


def libraryDirectory(library: CLibrary) -> Optional[str]:
    """
    The directory the loaded C library comes from (C{dladdr}), where it
    looks for its plugins first.
    """
    info = _DlInfo()
    address = ctypes.cast(library.open_real, ctypes.c_void_p)
    if not ctypes.CDLL(None).dladdr(address, ctypes.byref(info)) or not info.dli_fname:
        return None
    return os.path.dirname(os.path.realpath(os.fsdecode(info.dli_fname)))


# A scheme the C library could load a plugin for: no path separator, no NUL.
_MODULE_NAME = re.compile(r"[A-Za-z0-9_.+-]+", re.ASCII)


def pluginDirectories(library: CLibrary,
                      environ: Optional[Mapping[str, str]] = None) -> list[str]:
    """
    Where libvdeplug4 looks for C{libvdeplug_SCHEME.so}, in order:
    C{$VDEPLUGIN_PATH} (colon separated) alone if it is set; else the
    library's directory's C{vdeplug/}, the library's directory, each
    C{$LD_LIBRARY_PATH} entry's C{vdeplug/}, C{/lib/vdeplug},
    C{/usr/lib/vdeplug}; then the dynamic loader's own search for the bare
    name, approximated here by C{$LD_LIBRARY_PATH}, C{/lib} and C{/usr/lib}.
    """
    environ = os.environ if environ is None else environ
    given = environ.get("VDEPLUGIN_PATH")
    if given is not None:
        return [entry for entry in given.split(":") if entry]
    found = libraryDirectory(library)
    mine = [] if found is None else [os.path.join(found, "vdeplug"), found]
    loader = [entry for entry in environ.get("LD_LIBRARY_PATH", "").split(":") if entry]
    return [*mine, *(os.path.join(entry, "vdeplug") for entry in loader),
            "/lib/vdeplug", "/usr/lib/vdeplug", *loader, "/lib", "/usr/lib"]


def findModule(scheme: str, environ: Optional[Mapping[str, str]] = None) -> Optional[str]:
    """
    The C plugin C{vde_open} would load for C{scheme}
    (C{libvdeplug_SCHEME.so} in L{pluginDirectories}), or C{None}: none,
    or no C library.
    """
    if not _MODULE_NAME.fullmatch(scheme):
        return None
    try:
        library = loadLibrary()
    except VdeError:
        return None
    name = f"libvdeplug_{scheme}.so"
    for directory in pluginDirectories(library, environ):
        path = os.path.join(directory, name)
        if os.path.isfile(path):
            return path
    return None


def undecorated(description: str) -> str:
    """
    C{description} without the decoration L{vdetwist.registry.decorate}
    added in this process (which C{vde_open} is going to add again); as
    given if it does not end with it.

    A description long enough for the 127-byte cut to have removed all of
    the decoration is returned as given: the C library's own cut then drops
    what it appends, so the switch sees it once anyway.
    """
    start = description.rfind(" user=")
    while start >= 0:
        if decorate(description[:start]) == description:
            return description[:start]
        start = description.rfind(" user=", 0, start)
    return description


def _hasInput(poller: select.poll) -> bool:
    try:
        return bool(poller.poll(0))
    except InterruptedError:
        return True


@implementer(IVdePlug)
class CLibPlug(FdPlug):
    """
    A plug on a C{VDECONN} of the C library; the reactor reads its data
    descriptor (see the module docstring for what blocks).

    @ivar conn: the C{VDECONN *} (an int), or C{None} once closed.
    @ivar module: the C module's name (the scheme of the inner VNL).
    @ivar recvErrors: how many C{vde_recv} calls failed (the first is logged).
    """

    def __init__(self, reactor, library: CLibrary, conn: int, description: str,
                 module: str) -> None:
        super().__init__(reactor, description, library.datafd(conn))
        self.library = library
        self.conn: Optional[int] = conn
        self.module = module
        self.recvErrors = 0
        self._buffer = ctypes.create_string_buffer(VDE_ETHBUFSIZE)
        ctl = library.ctlfd(conn)
        self._control = (
            FdReader(ctl, self._controlReadable, f"{description} (control)", self._controlLost)
            if ctl >= 0 else None
        )
        self._poller = select.poll()
        if self._fd >= 0:
            self._poller.register(self._fd, _POLL_READY)
            try:
                os.set_blocking(self._fd, False)
            except OSError:
                pass
        else:
            self.readers = ()

    def _startReading(self) -> None:
        super()._startReading()
        if self._control is not None:
            self.reactor.addReader(self._control)

    def doRead(self) -> None:
        conn = self.conn
        if conn is None:
            return
        recv = self.library.recv
        buf = self._buffer
        deliver = self.receiver.frameReceived
        received = 0
        try:
            for _ in range(READ_BATCH):
                size = recv(conn, buf, VDE_ETHBUFSIZE, 0)
                if size >= ETH_HDRLEN:
                    received += 1
                    deliver(ctypes.string_at(buf, size))
                    if self.paused or self.closed:
                        return
                elif size < 0:
                    code = ctypes.get_errno()
                    if code not in HARMLESS:
                        self._recvFailed(code)
                    return
                elif size == 0 and self.module == "cmd":
                    self._lost(Failure(PlugLost(
                        f"{self.description}: the command ended", errno.EPIPE)))
                    return
                if not _hasInput(self._poller):
                    return
        finally:
            self.stats.received += received

    def _controlReadable(self) -> None:
        """
        Any readability or hangup of the control descriptor ends the plug.
        """
        how = "sent data on"
        assert self._control is not None, "only the control reader calls this"
        try:
            events = select.poll()
            events.register(self._control.fd, select.POLLIN | select.POLLHUP)
            ready = events.poll(0)
            if ready and ready[0][1] & (select.POLLHUP | select.POLLERR):
                how = "hung up"
        except (OSError, ValueError):
            pass
        self._lost(Failure(PlugLost(
            f"{self.description}: the network went away (the control "
            f"connection {how})", errno.ECONNRESET)))

    def _controlLost(self, reason: Failure) -> None:
        how = "hung up" if reason.check(ConnectionDone) else reason.getErrorMessage()
        self._lost(Failure(PlugLost(
            f"{self.description}: the network went away (the control connection {how})",
            errno.ECONNRESET)))

    def _recvFailed(self, code: int) -> None:
        self.recvErrors += 1
        if self.recvErrors == 1:
            log.warn("{plug}: vde_recv failed: {error} (further failures are only counted)",
                     plug=self.description, error=os.strerror(code))

    def send(self, frame: bytes) -> None:
        conn = self.conn
        size = len(frame)
        if conn is None or not ETH_HDRLEN <= size <= VDE_ETHBUFSIZE:
            self.stats.dropped += 1
            return
        if type(frame) is not bytes:
            frame = bytes(frame)
        if self.library.send(conn, frame, size, 0) < 0:
            self.stats.dropped += 1
        else:
            self.stats.sent += 1

    def connectionLost(self, reason: Failure) -> None:
        """
        The reactor saw the data descriptor hang up (with nothing left to
        read) or C{doRead} failed.
        """
        if self.module == "cmd":
            why = "the command ended"
        elif reason.check(ConnectionDone):
            why = "the network went away (the data descriptor hung up)"
        else:
            why = f"the network went away ({reason.getErrorMessage()})"
        self._lost(Failure(PlugLost(f"{self.description}: {why}", errno.EPIPE)))

    def _release(self) -> None:
        for reader in self.readers:
            self.reactor.removeReader(reader)
        if self._control is not None:
            self.reactor.removeReader(self._control)
        conn, self.conn = self.conn, None
        self._fd = -1
        if conn is not None:
            self.library.close(conn)


def openConnection(library: CLibrary, vnl: str, description: str, args: OpenArgs,
                   module: str = "") -> int:
    """
    C{vde_open(vnl, description, args)}: the C{VDECONN *}.  Blocks.

    @param module: the module C{vnl} names, for the error message.

    @raise VdeError: the library's errno and a message naming C{vnl}.
    """
    openArgs = _OpenArgs(
        args.port,
        None if args.group is None else os.fsencode(args.group),
        args.mode,
    )
    ctypes.set_errno(0)
    conn = library.open_real(os.fsencode(vnl), os.fsencode(description)[:MAX_DESCRIPTION],
                             INTERFACE_VERSION, ctypes.byref(openArgs))
    if not conn:
        code = ctypes.get_errno() or errno.EIO
        reason = os.strerror(code)
        if code == errno.EPROTONOSUPPORT:
            reason += (f" (no C plugin libvdeplug_{module or '<module>'}.so in the "
                       f"library's plugin directories or $VDEPLUGIN_PATH)")
        raise VdeError(f"vde_open({vnl!r}) failed in the C library: {reason}", code)
    return conn


def _innerModule(text: str) -> str:
    from vdetwist.vnl import resolve

    try:
        return resolve(text).scheme
    except (VdeError, OSError, ValueError):
        return ""


@implementer(IPlugin, IVdeBackend)
class CLibBackend:
    schemes = ("clib",)
    summary = "clib://VNL: VNL opened by the installed C libvdeplug (its plugins: slirp, vde, ...)"
    references = (REFERENCE,)

    def findModule(self, scheme: str) -> Optional[str]:
        """
        The C plugin for C{scheme}, if one is installed; see L{findModule}.
        """
        return findModule(scheme)

    def open(self, reactor, vnl, description, args, registry) -> Deferred:
        try:
            library = loadLibrary()
        except VdeError as e:
            return fail(e)
        inner = vnl.argument
        module = _innerModule(inner)
        text = undecorated(description)
        name = vnl.text or f"clib://{inner}"

        def opened(conn: int) -> CLibPlug:
            return CLibPlug(reactor, library, conn, name, module)

        pool = getattr(reactor, "getThreadPool", None)
        if pool is None:
            try:
                return succeed(opened(openConnection(library, inner, text, args, module)))
            except VdeError as e:
                return fail(e)

        cancelled = []
        result: Deferred = Deferred(lambda d: cancelled.append(True))
        work = deferToThreadPool(reactor, pool(), openConnection, library, inner, text, args,
                                 module)

        def done(conn: int) -> None:
            if cancelled:
                library.close(conn)
                return
            try:
                plug = opened(conn)
            except BaseException:
                library.close(conn)
                result.errback()
            else:
                result.callback(plug)

        def failed(failure: Failure) -> None:
            if not cancelled:
                result.errback(failure)

        work.addCallbacks(done, failed)
        return result
