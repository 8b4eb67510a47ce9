"""
What the tests share: finding the real C tools (skipping with a reason when
they are missing) and running vdetwist's own scripts from this checkout.
"""

from __future__ import annotations

import os
import shutil
import struct
import sys
from typing import Iterator

from twisted.trial.unittest import SkipTest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

#: Debian package that ships each C tool.
PACKAGES = {
    "vde_plug": "vdeplug",
    "dpipe": "vdeplug",
    "vde_switch": "vde2",
    "vdeterm": "vde2",
}


def isELF(path: str) -> bool:
    try:
        with open(path, "rb") as f:
            return f.read(4) == b"\x7fELF"
    except OSError:
        return False


def cTool(name: str) -> str:
    """
    The path of the C tool C{name}, never vdetwist's script of the same
    name; skips the test when it is not installed.
    """
    for directory in ["/usr/bin", "/usr/local/bin", "/bin"] + os.environ.get(
        "PATH", ""
    ).split(os.pathsep):
        candidate = os.path.join(directory, name)
        if isELF(candidate):
            return candidate
    raise SkipTest(
        f"the C {name} is not installed: apt-get install {PACKAGES.get(name, name)}"
    )


def ourTool(name: str) -> list[str]:
    """
    The argv prefix that runs vdetwist's C{name} script from this checkout.
    """
    return [sys.executable, "-m", f"vdetwist.scripts.{name}"]


def ourEnv(**extra: str) -> dict[str, str]:
    """
    An environment in which this checkout's vdetwist is importable.
    """
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in [ROOT, env.get("PYTHONPATH", "")] if p
    )
    env.update(extra)
    return env


def requireRoot() -> None:
    if os.geteuid() != 0:
        raise SkipTest("needs root (network namespaces, taps, chown)")


def requireCommand(name: str, package: str) -> str:
    found = shutil.which(name)
    if found is None:
        raise SkipTest(f"{name} is not installed: apt-get install {package}")
    return found


def frame(n: int, size: int = 100, src: bytes = b"\x02\x00\x00\x00\x00\x01",
          dst: bytes = b"\xff" * 6) -> bytes:
    """
    A distinct Ethernet frame: C{n} is written into the payload so that
    loss, duplication and reordering can be told apart.
    """
    body = struct.pack(">I", n) * ((size - 14) // 4 + 1)
    return dst + src + b"\x88\xb5" + body[: size - 14]


def records(frames: Iterator[bytes]) -> bytes:
    """
    The frames in the VDE stream encoding.
    """
    return b"".join(struct.pack(">H", len(f)) + f for f in frames)
