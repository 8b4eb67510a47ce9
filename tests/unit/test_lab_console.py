"""
Tests for L{vdetwist.lab.console}: wirefilter's console interpreter on a
L{Clock}.  Expected outputs are vde2 wirefilter 2.3.2's, from transcripts of
the installed one, except where the module documents a difference.
"""

from __future__ import annotations

import random

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from vdetwist.lab.console import WirefilterConsole
from vdetwist.lab.filter import LR, RL, WireFilter

OK = "1000 Success\n"
EINVAL = "1022 Invalid argument\n"


def data(*lines: str) -> str:
    return "0000 DATA END WITH '.'\n" + "".join(l + "\n" for l in lines) + ".\n" + OK


class Session:
    """
    Stands for a console session: collects its debug lines.
    """

    def __init__(self) -> None:
        self.lines: list[bytes] = []

    def debugLine(self, line: bytes) -> None:
        self.lines.append(line)


class ConsoleTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.filter = WireFilter(self.clock, lambda d, f: None, random.Random(1))
        self.console = WirefilterConsole(self.filter, self.clock)

    def run_(self, line: str, session=None) -> str:
        answer, action = self.console.execute(line, session)
        self.assertIsNone(action)
        return answer.decode()

    def test_values(self) -> None:
        self.assertEqual(self.run_("loss 20"), OK)
        self.assertEqual(self.run_("delay LR40+5N"), OK)
        self.assertEqual(self.run_("band 1K"), OK)
        self.assertEqual(self.run_("capacity RL3000"), OK)
        self.assertEqual(str(self.filter.value("delay", LR)), "40+5N")
        self.assertEqual(self.filter.value("bandwidth", RL).value, 1024)
        self.assertEqual(self.filter.value("chanbufsize", RL).value, 3000)

    def test_showinfo(self) -> None:
        self.run_("loss LR20.5")
        self.run_("mtu 1500")
        self.assertEqual(self.run_("showinfo"), data(
            "WireFilter: bidirectional",
            "Loss   L->R 20.5+0U   R->L 0+0U",
            "Lburst L->R 0+0U   R->L 0+0U",
            "Delay  L->R 0+0U   R->L 0+0U",
            "Dup    L->R 0+0U   R->L 0+0U",
            "Bandw  L->R 0+0U   R->L 0+0U",
            "Speed  L->R 0+0U   R->L 0+0U",
            "Noise  L->R 0+0U   R->L 0+0U",
            "MTU    L->R 1500     R->L 1500   ",
            "Cap.   L->R 0+0U   R->L 0+0U",
            "Reorder L->R 0+0U   R->L 0+0U",
            "Corrupt L->R 0+0U   R->L 0+0U",
            "Current Delay Queue size:   L->R 0      R->L 0   ",
            "Fifoness TRUE",
            "Waiting packets in delay queues 0",
            "Frames L->R received 0 delivered 0 lost 0 oversize 0 overflow 0 duplicated 0"
            " reordered 0 corrupted 0",
            "Frames R->L received 0 delivered 0 lost 0 oversize 0 overflow 0 duplicated 0"
            " reordered 0 corrupted 0",
        ))

    def test_showinfoCounts(self) -> None:
        """
        showinfo's last lines count what happened to each direction's frames.
        """
        self.run_("loss LR100")
        self.run_("mtu RL100")
        for n in range(3):
            self.filter.receive(LR, b"x" * 60)
        self.filter.receive(RL, b"x" * 60)
        self.filter.receive(RL, b"x" * 200)
        lines = self.run_("showinfo").splitlines()
        self.assertEqual(lines[-4:-2], [
            "Frames L->R received 3 delivered 0 lost 3 oversize 0 overflow 0 duplicated 0"
            " reordered 0 corrupted 0",
            "Frames R->L received 2 delivered 1 lost 0 oversize 1 overflow 0 duplicated 0"
            " reordered 0 corrupted 0",
        ])

    def test_showinfoOneWay(self) -> None:
        self.console.bidirectional = False
        self.console.blink = ("/tmp/blink", "007")
        lines = self.run_("showinfo").splitlines()
        self.assertEqual(lines[1:3], ["WireFilter: monodirectional", "Loss   0+0U"])
        self.assertIn("MTU    0", lines)
        self.assertEqual(lines[-5:-2], [
            "Frames received 0 delivered 0 lost 0 oversize 0 overflow 0 duplicated 0"
            " reordered 0 corrupted 0",
            "Blink socket: /tmp/blink", "Blink id:     007"])

    def test_markov(self) -> None:
        """
        A three-node chain set and shown as wirefilter does.
        """
        for line in ["markov-numnodes 3", "markov-name 1,bad link", "setedge 0,1,30",
                     "setedge 0,2,20", "delay 100+10N[1]", "loss 10[2]"]:
            self.assertEqual(self.run_(line), OK, line)
        self.filter.setCurrent(0)
        expected = data('Edge 0 ->0  ""->"" weigth 50', 'Edge 0 ->1  ""->"bad link" weigth 30',
                        'Edge 0 ->2  ""->"" weigth 20')
        self.assertEqual(self.run_("showedges 0"), expected)
        self.assertEqual(self.run_("showedges"), expected)
        self.assertEqual(self.run_("showcurrent"), data('Current Markov Node 0 "" (0,..,2)'))
        lines = self.run_("showinfo 1").splitlines()
        self.assertEqual(lines[2:5], ['Node 1 "bad link" (0,..,2) Markov-time 100',
                                      "Loss   L->R 0+0U   R->L 0+0U",
                                      "Lburst L->R 0+0U   R->L 0+0U"])
        self.assertIn("Delay  L->R 100+10N   R->L 100+10N", lines)
        self.assertEqual(self.run_("markov-setnode 1"), OK)
        self.assertEqual(self.run_("showcurrent"),
                         data('Current Markov Node 1 "bad link" (0,..,2)'))
        self.assertEqual(self.run_("markov-numnodes 2"), OK)
        self.assertEqual(self.run_("showedges 0"),
                         data('Edge 0 ->0  ""->"" weigth 70', 'Edge 0 ->1  ""->"bad link" weigth 30'))

    def test_markovDebug(self) -> None:
        """
        After markov-debug 1 a session hears of each change of node.
        """
        session, quiet = Session(), Session()
        self.console.sessions.update([session, quiet])
        self.assertEqual(self.run_("markov-debug 1", session), OK)
        for line in ["markov-numnodes 2", "markov-name 1,down", "setedge 0,1,100",
                     "setedge 1,0,100", "markov-setnode 0", "markov-time 10"]:
            self.run_(line)
        self.clock.advance(0.01)
        self.assertIn(b'3801 Node 0 "" -> 1 "down"\n', session.lines)
        self.assertEqual(quiet.lines, [])
        self.assertEqual(self.run_("markov-debug 1"), "markov-debug: '1': give a level, 0 or more,"
                         " in a session\n" + EINVAL)

    def test_errors(self) -> None:
        """
        Bad values are refused with a line saying why (wirefilter takes them
        silently); unknown commands are ENOSYS.
        """
        self.assertEqual(self.run_("bogus"), "1038 Function not implemented\n")
        self.assertEqual(self.run_("delay -5"),
                         "delay: '-5' is negative: values are 0 or more\n" + EINVAL)
        self.assertEqual(self.run_("markov-setnode 7"),
                         "markov-setnode: 7: nodes go from 0 to 0\n" + EINVAL)
        self.assertEqual(self.run_("setedge 9,9,9"), "setedge: 9,9: nodes go from 0 to 0\n" + EINVAL)
        self.assertEqual(self.run_("setedge x"),
                         "setedge: 'x': write setedge FROM,TO,WEIGHT (e.g. 0,1,20)\n" + EINVAL)
        self.assertEqual(self.run_("markov-numnodes 0"),
                         "markov-numnodes: '0': give a number of nodes, 1 or more\n" + EINVAL)
        self.assertEqual(self.run_("markov-time x"),
                         "markov-time: 'x' is not a number of milliseconds\n" + EINVAL)
        self.assertEqual(self.run_("showinfo 5"),
                         data("showinfo: there is no Markov node 5 (nodes 0 to 0)")
                         .replace(OK, EINVAL))
        self.assertEqual(self.run_("# comment"), "")
        self.assertEqual(self.run_(""), "")

    def test_fifo(self) -> None:
        self.run_("fifo 0")
        self.assertTrue(self.filter.nofifo)
        self.run_("fifo 1")
        self.assertFalse(self.filter.nofifo)

    def test_sessionEnd(self) -> None:
        self.assertEqual(self.console.execute("logout"), (b"9999 END OF SESSION", "logout"))
        self.assertEqual(self.console.execute("shutdown"), (b"1001 Operation not permitted\n", None))
        stopped = []
        self.console.shutdown = lambda: stopped.append(True)
        self.assertEqual(self.console.execute("shutdown")[1], "shutdown")

    def test_help(self) -> None:
        lines = self.run_("help").splitlines()
        self.assertEqual(lines[1:4], ["COMMAND      HELP", "------------ ------------",
                                      "help         print a summary of mgmt commands"])
        self.assertIn("markov-debug n     markov mode: set debug level", lines)

    def test_load(self) -> None:
        """
        load runs a script, echoing each line after the prompt and path.
        """
        path = self.mktemp()
        with open(path, "w") as f:
            f.write("loss 5\ndelay abc\n")
        lines = self.run_(f"load {path}").splitlines()
        self.assertEqual(lines[1:3], ["", f"VDEwf$  ({path}) loss 5"])
        self.assertIn("delay: 'abc' is not a value: write [LR|RL]VALUE[+JITTER][K|M|G][U|N]"
                      "[[NODE]], e.g. 20, LR20, 40+5N or 1M", lines)
        self.assertEqual(self.filter.value("loss", LR).value, 5)
        out, errors = self.console.runScript(path)
        self.assertEqual(errors, [f"{path}:2: delay abc: delay: 'abc' is not a value: write "
                                  "[LR|RL]VALUE[+JITTER][K|M|G][U|N][[NODE]], e.g. 20, LR20,"
                                  " 40+5N or 1M"])
        self.assertEqual(self.run_("load /nonexistent"),
                         data("load: No such file or directory").replace(
                             OK, "1002 No such file or directory\n"))
