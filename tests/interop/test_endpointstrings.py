"""
Tests for L{vdetwist.endpointstrings}: C{--listen} and C{endpoint://}
descriptions, one-line errors for what Twisted reports with a traceback, and
TLS cables that check the server when given a CA (real TLS over loopback,
with keys and certificates made by the C{openssl} command as the README's
recipe makes them).
"""

from __future__ import annotations

import errno
import os
import socket
import subprocess
import sys

from twisted.internet import reactor
from twisted.internet.threads import deferToThread
from twisted.trial.unittest import SkipTest, SynchronousTestCase, TestCase

from tests.support import LogCapture, frame, ourPlug, requireCommand, settle, tmpdir, until
from vdetwist import endpointstrings
from vdetwist.endpointstrings import (
    TLS_INSTALL, EndpointError, clientEndpoint, serverEndpoint, splitDescription)
from vdetwist.errors import VdeError, VNLError
from vdetwist.registry import registry
from vdetwist.streamplug import StreamPlugFactory
from vdetwist.testing import FrameCollector


def makeCertificate(directory: str, name: str, host: str) -> tuple[str, str]:
    """
    A self-signed certificate for C{host} and its key, as the README's TLS
    recipe makes them: the paths of the key and the certificate.
    """
    openssl = requireCommand("openssl", "openssl")
    key, cert = (os.path.join(directory, f"{name}.{kind}.pem") for kind in ("key", "cert"))
    subprocess.run(
        [openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
         "-subj", f"/CN={host}", "-addext", f"subjectAltName=DNS:{host}",
         "-keyout", key, "-out", cert],
        check=True, capture_output=True)
    return key, cert


def caDirectory(directory: str, name: str, *certificates: str) -> str:
    path = os.path.join(directory, name)
    os.mkdir(path)
    for i, certificate in enumerate(certificates):
        with open(certificate, "rb") as source, open(os.path.join(path, f"{i}.pem"), "wb") as f:
            f.write(source.read())
    return path


def requireTLS() -> None:
    try:
        endpointstrings.requireTLS()
    except EndpointError as e:
        raise SkipTest(str(e))


class SplitTests(SynchronousTestCase):
    def test_fields(self) -> None:
        self.assertEqual(splitDescription("ssl:5001:privateKey=k.pem"),
                         (["ssl", "5001"], {"privateKey": "k.pem"}))
        self.assertEqual(splitDescription(r"unix:path=/a\:b:x=1=2"),
                         (["unix"], {"path": "/a:b", "x": "1=2"}))
        self.assertEqual(splitDescription("tcp"), (["tcp"], {}))


class MissingTLSTests(SynchronousTestCase):
    """
    Without pyOpenSSL, a TLS description is refused in one line that says
    what to install.
    """

    def setUp(self) -> None:
        saved = sys.modules.get("OpenSSL")
        sys.modules["OpenSSL"] = None  # type: ignore[assignment]

        def restore() -> None:
            if saved is None:
                del sys.modules["OpenSSL"]
            else:
                sys.modules["OpenSSL"] = saved

        self.addCleanup(restore)

    def test_server(self) -> None:
        error = self.assertRaises(EndpointError, serverEndpoint, reactor, "ssl:5001:privateKey=k.pem")
        self.assertEqual(str(error), f"TLS needs OpenSSL (not installed): {TLS_INSTALL}")

    def test_client(self) -> None:
        failure = self.failureResultOf(
            registry.open(reactor, "endpoint://ssl:host=localhost:port=5001"), VNLError)
        self.assertEqual(
            str(failure.value),
            f"endpoint://ssl:host=localhost:port=5001: TLS needs OpenSSL (not installed): {TLS_INSTALL}")


class FileErrorTests(SynchronousTestCase):
    """
    The PEM files and CA directory of a TLS description are checked first,
    with a message naming the file and what it lacks.
    """

    def setUp(self) -> None:
        requireTLS()
        self.dir = tmpdir(self)
        self.key, self.cert = makeCertificate(self.dir, "server", "localhost")

    def assertServerError(self, description: str, message: str) -> None:
        error = self.assertRaises(EndpointError, serverEndpoint, reactor, description)
        self.assertEqual(str(error), message)

    def test_keyWithoutCertificate(self) -> None:
        """
        The issue's C{no start line}: a PEM holding only a key.
        """
        self.assertServerError(
            f"ssl:0:privateKey={self.key}",
            f"privateKey={self.key} holds no certificate (no PEM block ending in"
            " 'CERTIFICATE-----'): name the certificate's file with certKey=;"
            " the README's TLS recipe makes a key and a certificate")

    def test_certificateWithoutKey(self) -> None:
        self.assertServerError(
            f"ssl:0:privateKey={self.cert}",
            f"privateKey={self.cert} holds no private key (no PEM block ending in"
            " 'PRIVATE KEY-----'); the README's TLS recipe makes a key and a certificate")

    def test_missingFile(self) -> None:
        self.assertServerError(f"ssl:0:privateKey={self.key}:certKey=/nonexistent.pem",
                               "certKey=/nonexistent.pem: No such file or directory")

    def test_both(self) -> None:
        self.assertIsNotNone(serverEndpoint(reactor, f"ssl:0:privateKey={self.key}:certKey={self.cert}"))

    def test_clientFiles(self) -> None:
        for description, message in [
            ("ssl:host=h:port=1:caCertsDir=/nonexistent",
             "caCertsDir=/nonexistent: No such file or directory (a directory of CA *.pem files)"),
            (f"ssl:host=h:port=1:caCertsDir={self.dir}:trustRoots={self.dir}",
             "give caCertsDir= or trustRoots=, not both"),
            (f"ssl:host=h:port=1:certKey={self.key}",
             f"certKey={self.key} holds no certificate (no PEM block ending in"
             " 'CERTIFICATE-----'); the README's TLS recipe makes a key and a certificate"),
        ]:
            error = self.assertRaises(EndpointError, clientEndpoint, reactor, description)
            self.assertEqual(str(error), message)
        empty = os.path.join(self.dir, "empty")
        os.mkdir(empty)
        error = self.assertRaises(EndpointError, clientEndpoint, reactor,
                                  f"ssl:host=h:port=1:caCertsDir={empty}")
        self.assertEqual(str(error), f"caCertsDir={empty} holds no *.pem certificate")


class VerificationTests(TestCase):
    """
    C{endpoint://ssl:...} against a real TLS C{--listen} endpoint on
    loopback: with a CA it connects only to a server whose certificate the
    CA signed for C{host}; without one it connects to anybody and warns.
    """

    def setUp(self) -> None:
        requireTLS()
        self.dir = tmpdir(self)
        self.key, self.cert = makeCertificate(self.dir, "server", "localhost")
        self.accepted: list = []
        self.server = FrameCollector()

    async def listen(self, key: str, cert: str) -> int:
        def accept(plug) -> None:
            # (Reading, so that the handshake happens.)
            self.accepted.append(plug)
            plug.startReceiving(self.server)

        factory = StreamPlugFactory("test server", accept)
        port = await serverEndpoint(
            reactor, f"ssl:0:privateKey={key}:certKey={cert}:interface=127.0.0.1").listen(factory)
        self.addCleanup(port.stopListening)
        self.addCleanup(lambda: [plug.close() for plug in self.accepted])
        return port.getHost().port

    async def connect(self, port: int, extra: str = "") -> FrameCollector:
        """
        Open the client, send a frame to the server; what the client receives.
        """
        plug = await registry.open(reactor, f"endpoint://ssl:host=localhost:port={port}{extra}")
        self.addCleanup(plug.close)
        received = FrameCollector()
        plug.startReceiving(received)
        plug.send(frame(1))
        return received

    async def assertCarries(self, port: int, extra: str) -> None:
        received = await self.connect(port, extra)
        await until(lambda: self.accepted, "the server to accept the cable")
        self.accepted[0].send(frame(2))
        await until(lambda: self.server.frames and received.frames, "frames both ways")
        self.assertEqual((self.server.frames, received.frames), ([frame(1)], [frame(2)]))

    async def assertRefused(self, port: int, extra: str, message: str) -> None:
        """
        The open fails, with one line that names the VNL and says why.
        """
        vnl = f"endpoint://ssl:host=localhost:port={port}{extra}"
        with self.assertRaises(VdeError) as caught:
            await registry.open(reactor, vnl)
        expected = f"{vnl}: TLS handshake failed: {message}"
        self.assertTrue(str(caught.exception).startswith(expected), str(caught.exception))
        self.assertEqual(caught.exception.errno, errno.ECONNABORTED)
        self.assertEqual(self.server.frames, [])

    async def test_verified(self) -> None:
        port = await self.listen(self.key, self.cert)
        log = LogCapture(self)
        await self.assertCarries(port, ":caCertsDir=" + caDirectory(self.dir, "ca", self.cert))
        self.assertNotIn("not checked", log.text())

    async def test_trustRoots(self) -> None:
        port = await self.listen(self.key, self.cert)
        await self.assertCarries(port, ":trustRoots=" + caDirectory(self.dir, "ca", self.cert))

    async def test_framesBeforeReceiving(self) -> None:
        """
        The open waits for the handshake, which needs the connection read:
        frames the server sends at once still wait for C{startReceiving}.
        """
        port = await self.listen(self.key, self.cert)
        plug = await registry.open(
            reactor, f"endpoint://ssl:host=localhost:port={port}:caCertsDir="
            + caDirectory(self.dir, "ca", self.cert))
        self.addCleanup(plug.close)
        await until(lambda: self.accepted, "the server to accept the cable")
        self.accepted[0].send(frame(1))
        self.accepted[0].send(frame(2))
        await settle(0.2)
        received = FrameCollector()
        plug.startReceiving(received)
        await until(lambda: len(received.frames) == 2, "the frames sent before")
        self.assertEqual(received.frames, [frame(1), frame(2)])

    async def test_scriptExitStatus(self) -> None:
        """
        C{vde_plug} refused by a server it does not trust: status 1 (as for
        any network it cannot open), the reason in one line after C's.
        """
        other = makeCertificate(self.dir, "other", "localhost")[1]
        port = await self.listen(self.key, self.cert)
        vnl = f"endpoint://ssl:host=localhost:port={port}:caCertsDir=" + caDirectory(
            self.dir, "ca", other)
        process = ourPlug(self, "vde_plug", vnl)
        self.assertEqual(await deferToThread(process.wait), 1)
        self.assertEqual(await deferToThread(process.finish), (
            f"vde_open {vnl}: Software caused connection abort\n"
            f"vde_plug: {vnl}: TLS handshake failed: certificate verify failed (the server's"
            " certificate is not signed by a CA of caCertsDir=)\n"))

    async def test_otherCA(self) -> None:
        other = makeCertificate(self.dir, "other", "localhost")[1]
        port = await self.listen(self.key, self.cert)
        await self.assertRefused(
            port, ":caCertsDir=" + caDirectory(self.dir, "ca", other),
            "certificate verify failed (the server's certificate is not signed by a CA of caCertsDir=)")

    async def test_otherName(self) -> None:
        """
        A certificate the CA signed, but for another name than C{host}: the
        name is checked though Twisted's C{ssl:} alone would not.
        """
        key, cert = makeCertificate(self.dir, "elsewhere", "elsewhere.example")
        port = await self.listen(key, cert)
        await self.assertRefused(port, ":caCertsDir=" + caDirectory(self.dir, "ca", cert),
                                 "the server's certificate is for another name than host=")

    async def test_unverified(self) -> None:
        port = await self.listen(self.key, self.cert)
        log = LogCapture(self)
        await self.assertCarries(port, "")
        self.assertIn(
            f"ssl:host=localhost:port={port}: the server's certificate is not checked"
            " (no caCertsDir=): the link is encrypted, but anyone on the path may pose as the server",
            log.text())

