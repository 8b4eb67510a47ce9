"""
A switch's state for the web: a dict (C{/api/status} and the page) and
Prometheus text (C{/metrics}), read from its L{vdetwist.node.Node} and
L{vdetwist.vde2.interpreter.VdeConsole}.

Sans-IO: nothing here listens or schedules; L{RateHistory} samples the
counters when its owner asks (a C{LoopingCall} of the web layer).  The
counters are the very fields C{port/allprint} prints (L{Port.inFrames},
L{Port.receiveDropped}, L{Port.outDropped}, ...), read when a client asks:
the web adds no work to the frame path.
"""

from __future__ import annotations

from collections import deque
from typing import Any, Callable, Optional

import vdetwist
from vdetwist.node import HubEngine
from vdetwist.node.mactable import NOVLAN, formatMac

__all__ = ["RateHistory", "switchStatus", "metricsText", "escapeLabel", "MAC_ENTRIES_SHOWN"]

#: The most MAC table entries L{switchStatus} lists (the table may hold
#: 65,536; the page polls every few seconds).  C{macTable.size} says how
#: many there are.
MAC_ENTRIES_SHOWN = 1000

#: The per-port counters: the status key, the metric name, the
#: C{port/allprint} field it reads and its help text.
PORT_COUNTERS: tuple[tuple[str, str, Callable[[Any], int], str], ...] = (
    ("receiveFrames", "vde_port_receive_frames_total", lambda p: p.inFrames,
     "Frames the switch received on the port (port/allprint IN pkts)."),
    ("transmitFrames", "vde_port_transmit_frames_total", lambda p: p.outFrames,
     "Frames the switch sent out of the port (port/allprint OUT pkts)."),
    ("receiveBytes", "vde_port_receive_bytes_total", lambda p: p.inBytes,
     "Bytes the switch received on the port (port/allprint IN bytes)."),
    ("transmitBytes", "vde_port_transmit_bytes_total", lambda p: p.outBytes,
     "Bytes the switch sent out of the port (port/allprint OUT bytes)."),
    ("receiveDropFrames", "vde_port_receive_drop_frames_total", lambda p: p.receiveDropped,
     "Frames lost on the way in: not frames (too short or long, a broken "
     "record), or refused by the switch (port/allprint DROP in)."),
    ("transmitDropFrames", "vde_port_transmit_drop_frames_total", lambda p: p.outDropped,
     "Frames lost on the way out: the port's clients could not take them "
     "(port/allprint DROP out)."),
    ("receiveOffloadedFrames", "vde_port_receive_offloaded_frames_total",
     lambda p: p.vnetIn,
     "Frames with offload metadata (super-frames, partial checksums) received "
     "on the port from a tap or client of ours (not in port/allprint)."),
    ("transmitOffloadedFrames", "vde_port_transmit_offloaded_frames_total",
     lambda p: p.vnetOut,
     "Such frames sent out of the port as they are, not segmented."),
)

#: What L{RateHistory} keeps per sample, in this order.
RATE_FIELDS = ("receiveFrames", "transmitFrames", "receiveBytes", "transmitBytes")


def _rateValues(port) -> tuple[int, int, int, int]:
    return port.inFrames, port.outFrames, port.inBytes, port.outBytes


class RateHistory:
    """
    The last minutes of each port's rates (per second, in L{RATE_FIELDS}
    order), one sample per L{sample} call: what the page's charts draw.

    @ivar interval: the seconds its owner calls L{sample} at.
    @ivar length: the samples kept per port.
    """

    def __init__(self, node, clock, interval: float = 2.0, length: int = 150) -> None:
        self.node = node
        self.clock = clock
        self.interval = interval
        self.length = length
        self._last: dict[int, tuple[float, tuple[int, ...]]] = {}
        self._series: dict[int, deque[tuple[float, ...]]] = {}

    def sample(self) -> None:
        """
        Add one sample per port: the counters' growth since the last one
        over the time passed (a counter reset by C{port/resetcounter}
        counts from zero).  A port that went away is forgotten.
        """
        now = self.clock.seconds()
        ports = self.node.ports
        for number in [n for n in self._last if n not in ports]:
            del self._last[number]
            self._series.pop(number, None)
        for number, port in ports.items():
            values = _rateValues(port)
            last = self._last.get(number)
            self._last[number] = (now, values)
            if last is None or now <= last[0]:
                continue
            elapsed = now - last[0]
            # Two decimals: the page polls the whole history.
            rates = tuple(
                round((value - before if value >= before else value) / elapsed, 2)
                for value, before in zip(values, last[1])
            )
            series = self._series.get(number)
            if series is None:
                series = self._series[number] = deque(maxlen=self.length)
            series.append(rates)

    def series(self, number: int) -> list[tuple[float, ...]]:
        """
        Port C{number}'s samples, oldest first.
        """
        return list(self._series.get(number, ()))


def _userName(uid: Optional[int]) -> Optional[str]:
    if uid is None or uid < 0:
        return None
    from vdetwist.vde2.interpreter import _userName as name

    return name(uid)


def _plugDescription(plug, console) -> str:
    if console is not None:
        return console.descriptionOf(plug)
    return str(getattr(plug, "description", ""))


def _description(port, console) -> str:
    """
    A port's description: its clients' descriptions, comma-separated.
    """
    return ", ".join(_plugDescription(plug, console) for plug in port.endpoints)


def _endpointStatus(plug, console) -> dict:
    """
    One client of a port: its console id, module and description, and, for
    a vde2 client (L{IVdeClient}), who runs it: the owner of its socket
    (C{port/print}'s Current User) and its pid.
    """
    if console is None:
        return {"id": None, "module": None, "description": _plugDescription(plug, console),
                "uid": None, "user": None, "pid": None}
    client = console.clientOf(plug)
    uid = client.uid if client is not None and client.uid >= 0 else None
    return {
        "id": console.endpointId(plug),
        "module": console.moduleOf(plug),
        "description": _plugDescription(plug, console),
        "uid": uid,
        "user": _userName(uid),
        "pid": client.pid if client is not None else None,
    }


def _portStatus(port, console, history: Optional[RateHistory]) -> dict:
    result: dict[str, Any] = {
        "port": port.number,
        "active": port.active,
        "description": _description(port, console),
        "endpoints": [_endpointStatus(plug, console) for plug in port.endpoints],
        "untaggedVlan": None if port.untaggedVlan == NOVLAN else port.untaggedVlan,
        "taggedVlans": sorted(port.taggedVlans),
    }
    for key, _, read, _ in PORT_COUNTERS:
        result[key] = read(port)
    series = history.series(port.number) if history is not None else []
    result["rates"] = dict(zip(RATE_FIELDS, series[-1])) if series else None
    result["history"] = [list(sample) for sample in series]
    return result


def switchStatus(node, console=None, history: Optional[RateHistory] = None) -> dict:
    """
    The switch's state as JSON-ready data: the switch, every numbered port
    (as C{port/allprint} lists them), the MAC table (at most
    L{MAC_ENTRIES_SHOWN} entries).
    """
    table = node.table
    ports = node.ports
    entries = table.entries()
    switch: dict[str, Any] = {
        "kind": "hub" if isinstance(node.engine, HubEngine) else "switch",
        "version": vdetwist.__version__,
        "numports": node.numports,
        "portsInUse": sum(1 for port in ports.values() if port.active),
        "vlans": sorted(node.vlans),
    }
    if console is not None:
        switch.update(
            path=console.ctlDir,
            macaddr=formatMac(console.macaddr),
            pid=console.pid,
            uptime=console.clock.seconds() - console.startTime,
        )
    return {
        "switch": switch,
        "interval": history.interval if history is not None else None,
        "historyLength": history.length if history is not None else 0,
        "rateFields": list(RATE_FIELDS),
        "ports": [_portStatus(port, console, history) for port in ports.values()],
        "macTable": {
            "size": len(entries),
            "capacity": table.capacity,
            "evictions": table.evicted,
            "entries": [
                {
                    "mac": formatMac(entry.mac),
                    "vlan": entry.vlan,
                    "port": entry.port.number,
                    "age": round(entry.age, 1),
                }
                for entry in entries[:MAC_ENTRIES_SHOWN]
            ],
        },
    }


def escapeLabel(value: str) -> str:
    """
    C{value} as a label value of the Prometheus text format: backslash,
    double quote and line feed escaped.
    """
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _family(lines: list[str], name: str, kind: str, help: str) -> None:
    lines.append(f"# HELP {name} {help}")
    lines.append(f"# TYPE {name} {kind}")


def metricsText(node, console=None) -> str:
    """
    The Prometheus text exposition (version 0.0.4) of the switch: the
    C{port/allprint} counters of every numbered port (labels C{port},
    C{description}), the ports in use, the MAC table's size, capacity and
    evictions.
    """
    ports = [
        (port, f'port="{port.number}",description="{escapeLabel(_description(port, console))}"')
        for port in node.ports.values()
    ]
    lines: list[str] = []
    for _, name, read, help in PORT_COUNTERS:
        _family(lines, name, "counter", help)
        lines.extend(f"{name}{{{labels}}} {read(port)}" for port, labels in ports)
    table = node.table
    scalars = (
        ("vde_ports", "gauge", "Ports the switch has (--numports).", node.numports or 0),
        ("vde_ports_in_use", "gauge", "Ports with at least one client.",
         sum(1 for port, _ in ports if port.active)),
        ("vde_mac_table_entries", "gauge", "Addresses the MAC table holds.",
         len(table.entries())),
        ("vde_mac_table_capacity", "gauge", "The most addresses the MAC table holds.",
         table.capacity),
        ("vde_mac_table_evictions_total", "counter",
         "Addresses forgotten to make room (a port over --macsperport, or a full table).",
         table.evicted),
    )
    for name, kind, help, value in scalars:
        _family(lines, name, kind, help)
        lines.append(f"{name} {value}")
    return "\n".join(lines) + "\n"
