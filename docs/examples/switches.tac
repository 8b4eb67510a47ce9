"""
Several VDE switches, and the cable between them, as services of one twistd
process:

    twistd -ny docs/examples/switches.tac          # in the foreground
    VDE_DIR=/run/vde twistd -y docs/examples/switches.tac

It makes two vde_switch-compatible switches, DIR/lan and DIR/dmz (DIR is
$VDE_DIR, else $TMPDIR or /tmp), each with a management console (DIR/lan.mgmt,
DIR/dmz.mgmt, for vdeterm), and plugs the second into the first: QEMU or
any vde_plug on either reaches the other's ports.  Every option of
C{twistd vde} works here (C{Options} is what C{twistd vde} parses).
"""

import os
import tempfile

from twisted.application.service import Application

from vdetwist.errors import VdeError
from vdetwist.service import Options, VdeSwitchService, preflight

directory = os.environ.get("VDE_DIR") or tempfile.gettempdir()
application = Application("vde switches")


def switch(name: str, *extra: str) -> VdeSwitchService:
    path = os.path.join(directory, name)
    config = Options()
    config.parseOptions(["--switch", path, "--mgmt", path + ".mgmt", "--rcfile=", *extra])
    try:
        # What twistd vde checks first: a problem is one line, not a
        # traceback when the service starts.
        preflight(config)
    except VdeError as e:
        raise SystemExit(
            f"switches.tac: {e.message}; set VDE_DIR to another directory (now {directory})"
        ) from None
    service = VdeSwitchService(config)
    service.setName(name)
    service.setServiceParent(application)
    return service


switch("lan")
# Services start in order: the lan switch listens before the dmz one plugs
# into it.
switch("dmz", "--plug", "vde://" + os.path.join(directory, "lan"))
