"""
From a VNL to an open plug: find the backend for its scheme among the
installed Twisted plugins and let it open the network.

A scheme no Python backend serves is opened by the installed C plugin for
it (C{libvdeplug_SCHEME.so}), if there is one, through C{clib://}: putting
vdetwist's C{vde_plug} ahead of the C one never takes away a plugin the
user had.  The log says so once per scheme.
"""

from __future__ import annotations

import os
from errno import EIO, EROFS
import pwd
import sys
from dataclasses import dataclass
from typing import Iterable, Mapping, Optional

from twisted.internet.defer import Deferred, maybeDeferred
from twisted.logger import ILogObserver, Logger, globalLogPublisher
from twisted.plugin import IPlugin, getPlugins
from twisted.python.failure import Failure
from zope.interface import implementer, provider

from vdetwist.errors import NoBackendError, VdeError
from vdetwist.interfaces import IVdeBackend, IVdePlug
from vdetwist.vnl import VNL, resolve

log = Logger()

#: The description C{vde_plug} sends when not told otherwise.
DEFAULT_DESCRIPTION = "vdeplug:"
#: Descriptions are cut to this many bytes, as libvdeplug4 does.
MAX_DESCRIPTION = 127


@dataclass(frozen=True)
class OpenArgs:
    """
    libvdeplug4's C{open_args}: the port to ask a switch for, and the group
    and mode to give sockets the plug creates.
    """

    port: int = 0
    group: Optional[str] = None
    mode: int = 0o700


def userName(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)


def decorate(description: str, environ: Optional[Mapping[str, str]] = None) -> str:
    """
    The description as libvdeplug4 4.0.1 sends it to switches:
    C{"<descr> user=<name> pid=<pid>"}, plus C{" SSH=<ip>"} for ssh sessions.
    """
    environ = os.environ if environ is None else environ
    text = f"{description} user={userName(os.geteuid())} pid={os.getpid()}"
    ssh = environ.get("SSH_CLIENT")
    if ssh:
        text += f" SSH={ssh.split(' ')[0]}"
    return os.fsencode(text)[:MAX_DESCRIPTION].decode("utf-8", "ignore")


class Registry:
    """
    Backends by scheme.

    @param backends: use exactly these instead of the installed plugins
        (tests, embedding).
    """

    def __init__(self, backends: Optional[Iterable[IVdeBackend]] = None) -> None:
        self._given = None if backends is None else list(backends)
        self._byScheme: Optional[dict[str, IVdeBackend]] = None

    def backends(self) -> dict[str, IVdeBackend]:
        if self._byScheme is None:
            found = self._given
            if found is None:
                found = list(getPlugins(IVdeBackend))
            table: dict[str, IVdeBackend] = {}
            for backend in found:
                for scheme in backend.schemes:
                    table.setdefault(scheme, backend)
            self._byScheme = table
        return self._byScheme

    def backendFor(self, vnl: str, scheme: str) -> IVdeBackend:
        """
        The backend for C{scheme}: a Python one, else the C plugin through
        C{clib://} (when a C{clib} backend is among the backends).

        @raise NoBackendError: neither exists.
        """
        table = self.backends()
        backend = table.get(scheme)
        if backend is not None:
            return backend
        clib = table.get("clib")
        findModule = getattr(clib, "findModule", None)
        path = None if findModule is None else findModule(scheme)
        if clib is None or path is None:
            raise NoBackendError(vnl, scheme, sorted(table))
        log.info("no Python backend for {scheme}://: opening it with the C plugin {path}"
                 " through clib://", scheme=scheme, path=path)
        fallback = _ThroughCLibrary(clib, scheme, path)
        table[scheme] = fallback
        return fallback

    def open(
        self,
        reactor,
        vnl: Optional[str],
        description: str = DEFAULT_DESCRIPTION,
        args: OpenArgs = OpenArgs(),
        *,
        decorated: bool = False,
    ) -> Deferred[IVdePlug]:
        """
        Open C{vnl} (C{None} or C{""}: the user's default network).

        Fails with a L{vdetwist.errors.VdeError} naming the problem.

        @param decorated: C{description} is already decorated (a nesting
            backend such as C{vlan://} opening its nested VNL with the
            description it was given); it is passed on unchanged.
        """

        def doOpen() -> Deferred[IVdePlug]:
            parsed = resolve(vnl)
            backend = self.backendFor(parsed.text, parsed.scheme)
            text = description if decorated else decorate(description)
            return backend.open(reactor, parsed, text, args, self)

        def nameVNL(failure: Failure) -> Failure:
            error = failure.value
            if isinstance(error, VdeError):
                if error.vnl is None:
                    error.vnl = vnl or ""
            elif isinstance(error, OSError):
                return Failure(VdeError(error.strerror or str(error), error.errno or EIO, vnl or ""))
            return failure

        return maybeDeferred(doOpen).addErrback(nameVNL)


@implementer(IVdeBackend)
class _ThroughCLibrary:
    """
    Opens C{SCHEME://...}, which only a C plugin serves, as the C{clib://}
    backend opens C{clib://SCHEME://...}.
    """

    references = ()

    def __init__(self, clib: IVdeBackend, scheme: str, path: str) -> None:
        self.clib = clib
        self.schemes = (scheme,)
        self.summary = f"the C plugin {path}, through clib://"

    def open(self, reactor, vnl, description, args, registry):
        inner = VNL("clib", f"{vnl.scheme}://{vnl.argument}", vnl.text)
        return self.clib.open(reactor, inner, description, args, registry)


#: The registry of the installed backends.
registry = Registry()


def openVNL(
    reactor,
    vnl: Optional[str],
    description: str = DEFAULT_DESCRIPTION,
    args: OpenArgs = OpenArgs(),
) -> Deferred[IVdePlug]:
    """
    Open C{vnl} with the installed backends; see L{Registry.open}.
    """
    return registry.open(reactor, vnl, description, args)


def writePluginCaches() -> list[tuple[str, int]]:
    """
    Load every Twisted plugin, which rewrites each stale plugin cache
    (C{dropin.cache}), and return the caches that could not be written with
    the errno: Twisted only logs those, and then logs it again at every
    start of every C{twistd} until someone who may writes the cache.
    """
    unwritable: list[tuple[str, int]] = []

    @provider(ILogObserver)
    def observe(event: dict) -> None:
        if "plugin cache" in str(event.get("format", "")) and "errno" in event:
            unwritable.append((event["path"], event["errno"]))

    globalLogPublisher.addObserver(observe)
    try:
        list(getPlugins(IPlugin))
    finally:
        globalLogPublisher.removeObserver(observe)
    return unwritable


def cacheProblem(path: str, code: int) -> str:
    """
    What to do about the plugin cache C{path} that could not be written.
    """
    directory = os.path.dirname(path)
    if code == EROFS:
        who = "where the install is made, before its file system is read-only"
    else:
        who = f"as {userName(os.stat(directory).st_uid)} (who owns {directory})"
    return (
        f"vdetwist-plugins: cannot write Twisted's plugin cache {path}: {os.strerror(code)};"
        f" run vdetwist-plugins {who} after installing or upgrading, else every"
        f" twistd warns that it cannot write it"
    )


def regenerate_cache_main(argv: Optional[list[str]] = None) -> None:
    """
    C{vdetwist-plugins [SCHEME]}: list the installed backends, rewriting
    Twisted's plugin cache on the way, as is advised after installing plugins
    as root (a cache it cannot write is reported, saying who can); with a
    SCHEME, print its reference page instead.
    """
    from argparse import ArgumentParser

    from vdetwist._version import versionLine
    from vdetwist.reference import referencesOf

    parser = ArgumentParser(
        prog="vdetwist-plugins",
        description="List the installed VNL schemes, or print the reference of one.",
    )
    parser.add_argument("scheme", nargs="?", help="a scheme, e.g. vxvde or vxvde://")
    parser.add_argument(
        "--version", action="version", version=versionLine("vdetwist-plugins")
    )
    scheme = parser.parse_args(sys.argv[1:] if argv is None else argv).scheme
    unwritable = writePluginCaches()
    backends = Registry().backends()
    if scheme is None:
        for name, backend in sorted(backends.items()):
            sys.stdout.write(f"{name}://\t{backend.summary}\n")
        sys.stdout.flush()
        for path, code in unwritable:
            sys.stderr.write(cacheProblem(path, code) + "\n")
        return
    scheme = scheme.removesuffix("://")
    if scheme not in backends:
        parser.exit(2, f"vdetwist-plugins: no backend for {scheme}://"
                       f" (installed: {', '.join(sorted(backends))})\n")
    page = referencesOf([backends[scheme]]).get(scheme)
    if page is None:
        sys.stdout.write(f"{scheme}://: {backends[scheme].summary} (no reference page)\n")
    else:
        sys.stdout.write(page.markdown())
