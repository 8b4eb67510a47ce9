"""
C{agno://[KEYFILE][[ethtype=TYPE]]{NESTED-VNL}}: link-layer encryption over
a nested VNL, compatible with libvdeplug_agno (peers may be C or Python).

  - KEYFILE: an absolute path, C{~/PATH} (home of the effective user), or
    nothing for C{~/.vde_agno_key}; the first 32 hex digits in it are the
    AES-128 key.  Write it in lowercase, e.g.
    C{head -c 16 /dev/urandom | md5sum > ~/.vde_agno_key}: the C plugin reads
    an uppercase C{A} as 1, and vdetwist does the same to stay compatible;
  - C{ethtype=}: the ethertype of encrypted frames: C{0xa6de} by default,
    C{copy} (the frame's own, in clear), C{ipv4}, C{ipv6}, C{rand} (random
    per frame) or a number in 0x600-0xfffe.

Frames older than 2 s or more than 1 s in the future are dropped: the peers'
clocks must agree.  Needs the C{cryptography} package
(C{pip install 'vdetwist[agno]'}).  The rules are in L{vdetwist.wire.agno}.
"""

from __future__ import annotations

import os
from typing import Callable, Optional

from twisted.internet.defer import maybeDeferred
from twisted.plugin import IPlugin
from zope.interface import implementer

from vdetwist.wire import agno
from vdetwist.errors import VdeError
from vdetwist.interfaces import IVdeBackend
from vdetwist._transport.nested import TransformPlug, openNested
from vdetwist.reference import Option, SchemeReference
from vdetwist.vnl import parsePath

#: The options.
AGNO_OPTIONS = ("ethtype",)

REFERENCE = SchemeReference(
    scheme="agno",
    synopsis="agno://[KEYFILE][[ethtype=TYPE]][{NESTED-VNL}]",
    description=(
        "AES-128 encryption of every frame's payload on the way to the NESTED-VNL "
        "network (the default network without `{...}`), compatible with "
        "libvdeplug_agno: C and Python peers share a network. KEYFILE is an absolute "
        "path, `~/PATH` (the effective user's home) or empty for "
        f"`~/{agno.DEFAULT_KEYFILE}`; its first 32 hex digits are the key. Write "
        "them in lowercase (`head -c 16 /dev/urandom | md5sum > ~/.vde_agno_key`): the "
        "C plugin reads an uppercase `A` as 1, and so does vdetwist. Frames older than "
        "2 s or more than 1 s ahead are dropped, so the peers' clocks must agree. "
        "Needs `pip install 'vdetwist[agno]'` (the `cryptography` package)."
    ),
    grammar="path",
    nested=True,
    table=AGNO_OPTIONS,
    options=(
        Option(
            "ethtype",
            "Ethertype of encrypted frames: `copy` (the frame's own, in clear), "
            "`ipv4`, `ipv6`, `rand` (random per frame) or a number in 0x600-0xfffe.",
            "TYPE",
            f"{agno.DEFAULT_ETHTYPE:#06x}",
        ),
    ),
    examples=(
        ("agno://{vde:///tmp/sw}", "the switch `/tmp/sw`, encrypted with `~/.vde_agno_key`"),
        ("agno:///etc/vde/k1[ethtype=ipv4]{vxvde://}", "another key; frames look like IPv4"),
    ),
    manual="libvdeplug_agno",
)


class AgnoPlug(TransformPlug):
    """
    A plug encrypting what it sends and decrypting what it receives.

    @param clock: the wall clock in seconds since the epoch (the reactor's
        C{seconds}); frames carry it and receivers check it.
    """

    def __init__(self, description: str, inner, cipher: agno.AgnoCipher,
                 clock: Callable[[], float]) -> None:
        super().__init__(description, inner)
        self.cipher = cipher
        self.clock = clock

    def outgoing(self, frame: bytes) -> Optional[bytes]:
        return self.cipher.encrypt(frame, self.clock())

    def incoming(self, frame: bytes) -> Optional[bytes]:
        return self.cipher.decrypt(frame, self.clock())


def agnoCipher(vnl, randomBytes: Callable[[int], bytes] = os.urandom):
    """
    The cipher and the nested VNL (C{None}: default network) of an
    C{agno://} VNL.

    @raise VdeError: a bad option or key file, or no C{cryptography}.
    """
    prefix, nested = vnl.splitNested()
    path, options = parsePath(prefix, AGNO_OPTIONS, vnl.text)
    try:
        ethtype = agno.parseEthtype(options.get("ethtype"))
        agno.requireCryptography()
        key = agno.readKey(path)
    except VdeError as e:
        e.vnl = vnl.text
        raise
    return agno.AgnoCipher(key, ethtype, randomBytes), nested


@implementer(IPlugin, IVdeBackend)
class AgnoBackend:
    schemes = ("agno",)
    summary = "AES-128 link-layer encryption over a nested VNL (agno:///key{vde:///tmp/sw})"
    references = (REFERENCE,)

    def open(self, reactor, vnl, description, args, registry):
        cipher, nested = agnoCipher(vnl)
        opened = maybeDeferred(openNested, reactor, registry, nested, description, args)
        return opened.addCallback(
            lambda inner: AgnoPlug(vnl.text, inner, cipher, reactor.seconds)
        )
