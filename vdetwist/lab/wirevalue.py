"""
wirefilter's parameter values: C{[LR|RL]VALUE[+JITTER][K|M|G][U|N][[NODE]]}.

The syntax is vde2 wirefilter's (C{-l}, C{-d}... and the console commands)
and libvdeplug_wirefilter's (C{loss=}, C{delay=}...):

  - C{LR}/C{RL}: the direction set (both without it);
  - C{+JITTER}: a random variation around VALUE, drawn for every frame;
  - C{K}, C{M}, C{G}: multiply VALUE and JITTER by 2**10, 2**20, 2**30;
  - C{U} (default), C{N}: the jitter's distribution, uniform in
    [VALUE-JITTER, VALUE+JITTER] or normal with sigma JITTER/3 (so more than
    98% of the draws fall inside those bounds);
  - C{[NODE]}: the Markov node set (node 0 without it).

Unlike the C tools, which ignore what they cannot read (C{-l abc} is no
loss, C{-d -5} a negative delay), a value that is malformed or out of range
is an error naming the parameter.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Optional

__all__ = ["WireValue", "WireSetting", "WireValueError", "parseWireValue", "UNIFORM", "NORMAL"]

UNIFORM = "U"
NORMAL = "N"

_MULTIPLIERS = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
_NUMBER = r"(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?"
_VALUE = re.compile(
    rf"(?P<dir>LR|RL)?(?P<value>[+-]?{_NUMBER})(?:\+(?P<plus>[+-]?{_NUMBER}))?"
    r"(?P<mult>[kKmMgG])?(?P<alg>[uUnN])?(?:\[\s*(?P<node>[^\]]*)\])?",
)
_SYNTAX = "[LR|RL]VALUE[+JITTER][K|M|G][U|N][[NODE]], e.g. 20, LR20, 40+5N or 1M"


class WireValueError(ValueError):
    """
    A parameter value that cannot be used; the message names the parameter.
    """


@dataclass(frozen=True)
class WireValue:
    """
    One parameter in one direction: C{value}, plus or minus C{plus} drawn
    by the distribution C{alg} (L{UNIFORM} or L{NORMAL}).
    """

    value: float = 0.0
    plus: float = 0.0
    alg: str = UNIFORM

    @property
    def maximum(self) -> float:
        return self.value + self.plus

    @property
    def minimum(self) -> float:
        return self.value - self.plus

    def __str__(self) -> str:
        # wirefilter's showinfo format, "%g+%g%c".
        return f"{self.value:g}+{self.plus:g}{self.alg}"


@dataclass(frozen=True)
class WireSetting:
    """
    A parsed value: what to set, in which directions, on which node.

    @ivar directions: C{(0, 1)} for both, C{(0,)} for LR, C{(1,)} for RL.
    @ivar node: the Markov node, C{None} when not given (node 0, or the
        filter's choice).
    """

    value: WireValue
    directions: tuple[int, ...]
    node: Optional[int] = None


#: The largest value each percentage parameter takes (dup 100 would repeat
#: every frame forever, as wirefilter's manual warns).
PERCENT_LIMITS = {"loss": 100.0, "dup": 99.0, "reorder": 100.0, "corrupt": 100.0}


def parseWireValue(name: str, text: str) -> WireSetting:
    """
    Read one value of parameter C{name} (C{"loss"}, C{"delay"}...).

    @raise WireValueError: C{text} is not a value, or is out of range.
    """
    stripped = text.strip()
    match = _VALUE.fullmatch(stripped)
    if match is None:
        raise WireValueError(f"{name}: {text!r} is not a value: write {_SYNTAX}")
    mult = _MULTIPLIERS.get((match["mult"] or "").upper(), 1)
    value = float(match["value"]) * mult
    plus = float(match["plus"] or 0) * mult
    for number in (value, plus):
        if not math.isfinite(number):
            raise WireValueError(f"{name}: {text!r} is too large")
        if number < 0:
            raise WireValueError(f"{name}: {text!r} is negative: values are 0 or more")
    limit = PERCENT_LIMITS.get(name)
    if limit is not None and value > limit:
        raise WireValueError(
            f"{name}: {text!r} is above {limit:g}: a {name} percentage is 0 to {limit:g}"
        )
    node = None
    if match["node"] is not None:
        try:
            node = int(match["node"])
        except ValueError:
            raise WireValueError(
                f"{name}: {text!r}: the Markov node in [...] must be a number"
            ) from None
    directions = {"LR": (0,), "RL": (1,)}.get(match["dir"] or "", (0, 1))
    alg = (match["alg"] or UNIFORM).upper()
    return WireSetting(WireValue(value, plus, alg), directions, node)
