"""
The 802.1Q / 802.1ad tagging rules of C{vlan://}, sans-IO: frame in, frame
(or C{None}: dropped) out, in both directions.

The VM (the user of the plug) sees one VLAN untagged and possibly others
tagged; the nested network sees the VLAN tags.  Configuration, from
C{vlan://UNTAGGED/untag=U/tag=LIST/trunk/qinq{...}}:

  - C{untagged}: the VLAN the VM sees untagged (0: none, 4095: untagged
    frames from the VM are dropped);
  - C{untag}: network-side untagged traffic is shown to the VM tagged with
    this VLAN (0: not at all), and VM frames tagged with it leave untagged;
  - C{tags}: (VM VLAN, network VLAN) pairs the VM may use tagged;
  - C{trunk}: the VM may also use any other valid VLAN, unchanged;
  - C{qinq}: the tag protocol is 802.1ad (0x88a8) instead of 802.1Q.

VLANs 0, 1 and 4095 are not "valid" (libvdeplug_vlan reserves 1 too).
"""

from __future__ import annotations

import re
import struct
from dataclasses import dataclass
from typing import Mapping, Optional

from vdetwist.vnl import strtol

TPID_8021Q = 0x8100
TPID_8021AD = 0x88A8
#: C{UNTAGGED} value meaning: drop untagged frames coming from the VM.
DROP_UNTAGGED = 4095
VID_MASK = 0xFFF
ETH_HDRLEN = 14
TAG_LEN = 4

_SEPARATORS = re.compile(r"[.:]")


def vlanNumber(text: str) -> int:
    """
    A VLAN number as libvdeplug_vlan reads it: C{strtol(text, 0) & 0xfff}
    (so C{-1} is 4095 and trailing text is ignored).
    """
    return strtol(text)[0] & VID_MASK


def vlanok(vid: int) -> bool:
    """
    Whether C{vid} may be carried tagged: not 0, 1 or 4095.
    """
    return vid not in (0, 1, 4095)


def parseTagList(text: str, cQuirk: bool = True) -> tuple[tuple[int, int], ...]:
    """
    The C{tag=} list: tokens separated by C{.} or C{:} (empty ones skipped),
    each C{A} or C{A-B}: VM VLAN A is network VLAN B (default A).

    @param cQuirk: libvdeplug_vlan counts the tokens on a copy of the list
        missing its last character, and ignores the list when that count is
        0: a list made of a single one-character token (C{tag=5}) is
        ignored completely, while C{tag=5:} and C{tag=05} work.  This is
        replicated by default, so that a VNL means the same network with
        vdetwist as with the C plugin (see L{quirkIgnoresTagList}).
    """
    if cQuirk and quirkIgnoresTagList(text):
        return ()
    pairs = []
    for token in _SEPARATORS.split(text):
        if not token:
            continue
        first, end = strtol(token)
        second = first
        if token[end : end + 1] == "-":
            second = strtol(token[end + 1 :])[0]
        pairs.append((first & VID_MASK, second & VID_MASK))
    return tuple(pairs)


def quirkIgnoresTagList(text: str) -> bool:
    """
    Whether libvdeplug_vlan ignores the C{tag=} list C{text} (a single
    one-character token, such as C{tag=5}), although it names a VLAN.
    """
    tokens = [t for t in _SEPARATORS.split(text) if t]
    shortened = [t for t in _SEPARATORS.split(text[:-1]) if t]
    return bool(tokens) and not shortened


@dataclass(frozen=True)
class VlanRules:
    """
    One C{vlan://} configuration; L{toNetwork} and L{toVM} apply it.
    """

    untagged: int = 0
    untag: int = 0
    tags: tuple[tuple[int, int], ...] = ()
    trunk: bool = False
    qinq: bool = False

    @classmethod
    def fromOptions(cls, address: str, options: Mapping[str, str]) -> "VlanRules":
        """
        The rules of C{vlan://ADDRESS/OPTIONS}, from L{vdetwist.vnl.parseSlash}
        with L{vdetwist.backends.vlan.VLAN_OPTIONS} (full option names as keys).
        """
        # "u"/"untag" (and "t"/"tag") are two names of one setting; should
        # both be given, the one later in the options mapping wins.
        untagValue = _last(options, ("u", "untag"))
        tagValue = _last(options, ("t", "tag"))
        return cls(
            untagged=vlanNumber(address),
            untag=vlanNumber(untagValue) if untagValue is not None else 0,
            tags=parseTagList(tagValue) if tagValue is not None else (),
            trunk="x" in options or "trunk" in options,
            qinq="q" in options or "qinq" in options or "ad" in options,
        )

    @property
    def tpid(self) -> int:
        return TPID_8021AD if self.qinq else TPID_8021Q

    def _map(self, vid: int, toNetwork: bool) -> Optional[int]:
        for vm, net in self.tags:
            if toNetwork and vm == vid:
                return net
            if not toNetwork and net == vid:
                return vm
        if self.trunk and vlanok(vid):
            return vid
        return None

    def _tag(self, frame: bytes, vid: int) -> bytes:
        return frame[:12] + struct.pack(">HH", self.tpid, vid) + frame[12:]

    def toNetwork(self, frame: bytes) -> Optional[bytes]:
        """
        A frame the VM sends, as it goes on the nested network, or C{None}.
        """
        if len(frame) < ETH_HDRLEN:
            return None
        if (frame[12] << 8 | frame[13]) == self.tpid:
            if len(frame) < ETH_HDRLEN + TAG_LEN:
                return None  # a truncated tag: nothing sane to forward
            vid = (frame[14] << 8 | frame[15]) & VID_MASK
            if vid == self.untag:
                # (with untag=0, priority-tagged VID 0 frames are untagged too)
                return frame[:12] + frame[16:]
            mapped = self._map(vid, toNetwork=True)
            if mapped is not None and vlanok(mapped):
                # The whole TCI is replaced: priority and DEI are cleared.
                return frame[:14] + struct.pack(">H", mapped) + frame[16:]
            return None
        # Untagged (with qinq, an 802.1Q-tagged frame counts as untagged and
        # gets the 802.1ad tag pushed on top of its own).
        if self.untagged == 0:
            return frame if self.untag == 0 else None
        if self.untagged == DROP_UNTAGGED:
            return None
        return self._tag(frame, self.untagged)

    def toVM(self, frame: bytes) -> Optional[bytes]:
        """
        A frame from the nested network, as the VM gets it, or C{None}.

        Unlike libvdeplug_vlan, whose receive returns the caller's buffer
        size (9234) instead of the frame length for re-mapped tagged frames
        (so that C vde_plug emits padded frames), the frame returned here
        always has its real length.
        """
        if len(frame) < ETH_HDRLEN:
            return frame  # passed through as they are, as in C
        if (frame[12] << 8 | frame[13]) == self.tpid:
            if len(frame) < ETH_HDRLEN + TAG_LEN:
                return None
            vid = (frame[14] << 8 | frame[15]) & VID_MASK
            if vid == self.untagged:
                return frame[:12] + frame[16:]
            mapped = self._map(vid, toNetwork=False)
            if mapped is not None and vlanok(mapped):
                return frame[:14] + struct.pack(">H", mapped) + frame[16:]
            return None
        if self.untag != 0:
            return self._tag(frame, self.untag)
        if self.untagged != 0:
            return None
        return frame


def _last(options: Mapping[str, str], names: tuple[str, ...]) -> Optional[str]:
    value = None
    for key, text in options.items():
        if key in names:
            value = text
    return value
