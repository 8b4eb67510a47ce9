"""
What the UDP and ICMP NATs share: a table of flows that expire when idle.
"""

from __future__ import annotations

from typing import Optional


class FlowTable:
    """
    The idle-timeout housekeeping of a NAT's C{flows}: a mapping of key to
    flows with an C{expires} time and a C{close()}.
    """

    flows: dict

    def expire(self, now: float) -> None:
        for key in [k for k, f in self.flows.items() if f.expires <= now]:
            self.flows.pop(key).close()

    def close(self) -> None:
        for flow in self.flows.values():
            flow.close()
        self.flows.clear()

    def nextExpiry(self) -> Optional[float]:
        if not self.flows:
            return None
        return min(f.expires for f in self.flows.values())
