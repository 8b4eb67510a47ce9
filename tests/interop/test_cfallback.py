"""
Tests for the C plugin fallback of L{vdetwist.registry}: a scheme no Python
backend serves opens through C{clib://} when libvdeplug has a plugin for it.

The real test builds a plugin of its own from libvdeplug-dev's headers
(a scheme vdetwist does not implement), puts it on C{$VDEPLUGIN_PATH} and
passes frames through it with vdetwist's C{vde_plug}.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess

from twisted.internet.defer import succeed
from twisted.logger import LogLevel, formatEvent
from twisted.trial.unittest import SkipTest, SynchronousTestCase

from tests.support import LogCapture, frame, ourEnv, ourPlug, tmpdir, waitFor
from vdetwist.backends.clib import findModule, loadLibrary, pluginDirectories
from vdetwist.errors import NoBackendError, VdeError
from vdetwist.registry import Registry

#: A C plugin, C{vttest://PATH}: frames cross a unix datagram socket bound
#: at PATH.plug and connected to PATH.
PLUGIN_SOURCE = r"""
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <errno.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <libvdeplug_mod.h>

struct conn { void *handle; struct vdeplug_module *module; int fd; char path[108]; };

static VDECONN *vt_open(char *url, char *descr, int version, struct vde_open_args *args) {
    struct sockaddr_un me = {AF_UNIX}, peer = {AF_UNIX};
    struct conn *c;
    (void) descr; (void) version; (void) args;
    if (strlen(url) + 6 > sizeof(me.sun_path)) { errno = ENAMETOOLONG; return NULL; }
    if ((c = calloc(1, sizeof(*c))) == NULL) return NULL;
    strcpy(peer.sun_path, url);
    strcpy(me.sun_path, url);
    strcat(me.sun_path, ".plug");
    strcpy(c->path, me.sun_path);
    c->fd = socket(AF_UNIX, SOCK_DGRAM, 0);
    if (c->fd < 0 || bind(c->fd, (struct sockaddr *) &me, sizeof(me)) < 0
        || connect(c->fd, (struct sockaddr *) &peer, sizeof(peer)) < 0) {
        int e = errno;
        if (c->fd >= 0) close(c->fd);
        free(c);
        errno = e;
        return NULL;
    }
    return (VDECONN *) c;
}
static ssize_t vt_recv(VDECONN *c, void *buf, size_t len, int flags) {
    return recv(((struct conn *) c)->fd, buf, len, flags);
}
static ssize_t vt_send(VDECONN *c, const void *buf, size_t len, int flags) {
    return send(((struct conn *) c)->fd, buf, len, flags);
}
static int vt_datafd(VDECONN *c) { return ((struct conn *) c)->fd; }
static int vt_ctlfd(VDECONN *c) { (void) c; return -1; }
static int vt_close(VDECONN *conn) {
    struct conn *c = (struct conn *) conn;
    close(c->fd);
    unlink(c->path);
    free(c);
    return 0;
}
struct vdeplug_module vdeplug_ops = {
    .vde_open_real = vt_open, .vde_recv = vt_recv, .vde_send = vt_send,
    .vde_datafd = vt_datafd, .vde_ctlfd = vt_ctlfd, .vde_close = vt_close,
};
"""


def requireLibrary() -> None:
    try:
        loadLibrary()
    except VdeError as e:
        raise SkipTest(f"the C libvdeplug is not installed ({e.message}); "
                       f"apt-get install libvdeplug2") from None


class FakeCLib:
    """
    A C{clib} backend whose C plugins are C{modules}; records its opens.
    """

    schemes = ("clib",)
    summary = "test"
    references = ()

    def __init__(self, modules: dict[str, str]) -> None:
        self.modules = modules
        self.opened: list = []

    def findModule(self, scheme: str):
        return self.modules.get(scheme)

    def open(self, reactor, vnl, description, args, registry):
        self.opened.append(vnl)
        return succeed(vnl)


class FallbackTests(SynchronousTestCase):
    def test_throughClib(self) -> None:
        """
        An unknown scheme with a C plugin opens as C{clib://VNL}, said once
        in the log at info level.
        """
        logs = LogCapture(self)
        clib = FakeCLib({"vdesl": "/usr/lib/vdeplug/libvdeplug_vdesl.so"})
        registry = Registry([clib])
        for _ in range(2):
            vnl = self.successResultOf(registry.open(None, "vdesl:///dev/ttyS0[9600]"))
        self.assertEqual((vnl.scheme, vnl.argument, vnl.text),
                         ("clib", "vdesl:///dev/ttyS0[9600]", "vdesl:///dev/ttyS0[9600]"))
        self.assertEqual(len(clib.opened), 2)
        said = [e for e in logs.events if "no Python backend for vdesl://" in formatEvent(e)]
        self.assertEqual([e["log_level"] for e in said], [LogLevel.info])
        self.assertIn("the C plugin /usr/lib/vdeplug/libvdeplug_vdesl.so through clib://",
                      formatEvent(said[0]))

    def test_noModule(self) -> None:
        """
        Without a C plugin, or without C{clib}, the scheme stays unknown.
        """
        for backends in ([FakeCLib({})], []):
            failure = self.failureResultOf(Registry(backends).open(None, "vdesl://x"),
                                           NoBackendError)
            self.assertIn("no backend for scheme 'vdesl'", str(failure.value))

    def test_directories(self) -> None:
        """
        C{$VDEPLUGIN_PATH}, when set, is all libvdeplug searches; else the
        library's own directory comes first.
        """
        requireLibrary()
        library = loadLibrary()
        self.assertEqual(pluginDirectories(library, {"VDEPLUGIN_PATH": "/a:/b"}), ["/a", "/b"])
        directories = pluginDirectories(library, {"LD_LIBRARY_PATH": "/opt/l"})
        self.assertTrue(os.path.isfile(os.path.join(directories[1], "libvdeplug.so.2")),
                        directories)
        self.assertIn("/opt/l/vdeplug", directories)
        self.assertIsNone(findModule("../vde"))
        self.assertIsNone(findModule("no-such-scheme", {"VDEPLUGIN_PATH": "/nonexistent"}))


class RealPluginTests(SynchronousTestCase):
    """
    vdetwist's C{vde_plug} opens a scheme only a C plugin serves.
    """

    def buildPlugin(self, directory: str) -> None:
        requireLibrary()
        compiler = shutil.which("cc")
        if compiler is None:
            raise SkipTest("no C compiler (apt-get install gcc)")
        if not os.path.exists("/usr/include/libvdeplug_mod.h"):
            raise SkipTest("no libvdeplug headers (apt-get install libvdeplug-dev)")
        source = os.path.join(directory, "vttest.c")
        with open(source, "w") as f:
            f.write(PLUGIN_SOURCE)
        subprocess.run([compiler, "-shared", "-fPIC", "-o",
                        os.path.join(directory, "libvdeplug_vttest.so"), source],
                       check=True, capture_output=True, timeout=120)

    def test_framesPass(self) -> None:
        directory = tmpdir(self)
        self.buildPlugin(directory)
        peer = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.addCleanup(peer.close)
        path = os.path.join(directory, "peer")
        peer.bind(path)
        peer.settimeout(15)
        self.assertIsNone(findModule("vttest", {"VDEPLUGIN_PATH": "/nonexistent"}))
        self.assertEqual(findModule("vttest", {"VDEPLUGIN_PATH": directory}),
                         os.path.join(directory, "libvdeplug_vttest.so"))
        plug = ourPlug(self, "vde_plug vttest://", f"vttest://{path}",
                       env=ourEnv(VDEPLUGIN_PATH=directory))
        waitFor(lambda: os.path.exists(path + ".plug"), "the C plugin to open",
                procs=[plug], failIfEnded=True)
        out = frame(1)
        plug.send(out)
        self.assertEqual(peer.recv(9000), out)
        back = frame(2)
        peer.sendto(back, path + ".plug")
        self.assertEqual(plug.recv(), back)
