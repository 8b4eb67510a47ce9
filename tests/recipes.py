"""
The recipes of README.md and docs/, read from the Markdown and run as
written, for L{tests.project.test_recipes}.

Markdown: the code block (indented or fenced) right after an HTML comment
C{<!-- recipe: NAME -->} is recipe NAME.  Every other code block must be
fenced with a language that is not a shell or Python (C{```text} for a
diagram), so a new recipe cannot go untested.  The indented block of a
C{docs/examples} file's docstring is the recipe named after the file
(C{l2chat}, C{switches}).

A recipe line is a shell command, run with C{sh -c} after these
substitutions, and nothing else:

  - C{HOST$ } before a command runs it "on HOST": every host (C{local} for
    lines without one) is a directory C{ROOT/HOST} of a temporary ROOT, the
    command's working directory and C{$HOME}, holding the host's C{tmp},
    C{run} and C{srv}: C{/tmp/}, C{/run/}, C{/srv/} in a command become
    C{ROOT/HOST/tmp/} etc. (and C{$TMPDIR} is C{ROOT/HOST/tmp});
  - C{docs/} becomes this checkout's C{docs/};
  - a trailing C{  # comment} is dropped.

Its C{PATH} starts with this checkout's C{vde_plug}, C{dpipe},
C{vdecapture}, C{vdetwist-plugins}, C{twistd}, C{python} and C{python3},
and with stand-ins for C{ssh HOST COMMAND} (runs COMMAND on this machine as on HOST:
in HOST's directory, with the calling host's paths made HOST's), C{ssh -p
PORT USER@HOST} (prints what the server at HOST:PORT says first: an SSH
server's banner) and C{scp HOST:FILE DEST} (copies HOST's FILE).  Host
names (C{host}, C{host1}, C{host2}) resolve to 127.0.0.1 in the network
namespace the recipes that need one run in (as root: C{ip netns exec}
reads that namespace's C{/etc/netns/NAME/hosts}).
"""

from __future__ import annotations

import ast
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from typing import Optional

from tests.support import ROOT, TIMEOUT, ourEnv, waitFor

#: The documents: README.md and docs/*.md.  (docs/reference/ is generated
#: from the parser's tables: its blocks are synopses, its example VNLs are
#: checked by tests/project/test_reference.py.)
DOCUMENTS = ["README.md"] + sorted(
    os.path.join("docs", name) for name in os.listdir(os.path.join(ROOT, "docs"))
    if name.endswith(".md"))
EXAMPLES = "docs/examples"
HOST_NAMES = ("host", "host1", "host2")

_MARKER = re.compile(r"^<!--\s*recipe:\s*(\w+)\s*-->\s*$")
_FENCE = re.compile(r"^```\s*(\w*)")
_COMMENT = re.compile(r"\s+#\s.*$")
_HOST = re.compile(r"^(\w+)\$\s+")
_PATHS = re.compile(r"(?<![\w.])/(tmp|run|srv)/")
#: Fenced languages that are not recipes.
NOT_RECIPES = ("text",)


@dataclass
class Block:
    """
    A code block of a document: where it is, its recipe name (C{None} for
    an unmarked block) and language (C{""} for an indented block), its lines.
    """

    source: str
    line: int
    name: Optional[str]
    language: str
    lines: list[str] = field(default_factory=list)

    def where(self) -> str:
        return f"{self.source}:{self.line}"


def markdownBlocks(path: str) -> list[Block]:
    """
    The code blocks of the Markdown file at C{path} (relative to the checkout).
    """
    with open(os.path.join(ROOT, path)) as f:
        text = f.read().splitlines()
    blocks: list[Block] = []
    previous = ""
    i = 0
    while i < len(text):
        line = text[i]
        marker = _MARKER.match(previous)
        name = marker.group(1) if marker else None
        fence = _FENCE.match(line)
        if fence:
            block = Block(path, i + 1, name, fence.group(1))
            i += 1
            while i < len(text) and not text[i].startswith("```"):
                block.lines.append(text[i])
                i += 1
            blocks.append(block)
        elif line.startswith("    ") and (not previous.strip() or marker):
            block = Block(path, i + 1, name, "")
            while i < len(text) and text[i].startswith("    "):
                block.lines.append(text[i][4:])
                i += 1
            blocks.append(block)
            previous = text[i - 1]
            continue
        previous = line
        i += 1
    return blocks


def exampleBlocks(path: str) -> list[Block]:
    """
    The indented blocks of a C{docs/examples} file's docstring, each named
    after the file.
    """
    with open(os.path.join(ROOT, path)) as f:
        source = f.read()
    docstring = ast.get_docstring(ast.parse(source), clean=True) or ""
    name = os.path.splitext(os.path.basename(path))[0]
    blocks: list[Block] = []
    for number, line in enumerate(docstring.splitlines(), 1):
        if line.startswith("    "):
            if not blocks or blocks[-1].line + len(blocks[-1].lines) != number:
                blocks.append(Block(path, number, name, ""))
            blocks[-1].lines.append(line[4:])
    return blocks


def allBlocks() -> list[Block]:
    blocks = [b for path in DOCUMENTS for b in markdownBlocks(path)]
    for name in sorted(os.listdir(os.path.join(ROOT, EXAMPLES))):
        blocks += exampleBlocks(os.path.join(EXAMPLES, name))
    return blocks


def recipes() -> dict[str, Block]:
    """
    Every recipe, by name.
    """
    found: dict[str, Block] = {}
    for block in allBlocks():
        if block.name is not None:
            if block.name in found:
                raise AssertionError(f"recipe {block.name} at {block.where()} and"
                                     f" {found[block.name].where()}")
            found[block.name] = block
    return found


@dataclass
class Command:
    """
    One line of a recipe: the host it runs on and the command as written.
    """

    host: str
    text: str


def parseLine(line: str) -> Command:
    line = _COMMENT.sub("", line).strip()
    host = _HOST.match(line)
    if host:
        return Command(host.group(1), line[host.end():])
    return Command("local", line)


# ---------------------------------------------------------------------------
# Running


_WRAPPERS = {
    "vde_plug": "-m vdetwist.scripts.vde_plug",
    "dpipe": "-m vdetwist.scripts.dpipe",
    "vdecapture": "-m vdetwist.scripts.vdecapture",
    "vdetwist-plugins": "-c 'import sys; from vdetwist.registry import regenerate_cache_main as m;"
                        " sys.argv[0] = \"vdetwist-plugins\"; m()'",
    "twistd": "-c 'import sys; from twisted.scripts.twistd import run; sys.argv[0] = \"twistd\"; run()'",
    "python": "",
    "python3": "",
}

#: The ssh and scp stand-ins (see the module's docstring).
_STANDIN = '''
import os, socket, sys
root, here = os.environ["RECIPE_ROOT"], os.environ["RECIPE_HOST"]
args = sys.argv[1:]
if sys.argv[0].endswith("scp"):
    source, dest = args
    host, _, path = source.partition(":")
    with open(os.path.join(root, host, path), "rb") as f, open(
            os.path.join(dest, os.path.basename(path)) if os.path.isdir(dest) else dest, "wb") as g:
        g.write(f.read())
    sys.exit(0)
if args[0] == "-p":
    port, host = int(args[1]), args[2].rpartition("@")[2]
    with socket.create_connection((host, port), timeout=10) as s:
        sys.stdout.write(s.recv(1024).decode("utf-8", "replace"))
    sys.exit(0)
host, command = args[0], " ".join(args[1:])
command = command.replace(os.path.join(root, here) + "/", os.path.join(root, host) + "/")
os.environ["RECIPE_HOST"] = host
os.chdir(os.path.join(root, host))
os.execvp("sh", ["sh", "-c", command])
'''


class Process:
    """
    A recipe command running in the background, its output in a file.
    """

    def __init__(self, name: str, argv: list[str], env: dict, cwd: str, log: str,
                 stdin: bool = False) -> None:
        self.name = name
        self.logPath = log
        with open(log, "wb") as out:
            self.proc = subprocess.Popen(
                argv, env=env, cwd=cwd, stdout=out, stderr=subprocess.STDOUT,
                stdin=subprocess.PIPE if stdin else subprocess.DEVNULL, process_group=0)

    def running(self) -> bool:
        return self.proc.poll() is None

    def output(self) -> str:
        with open(self.logPath, "rb") as f:
            return f.read().decode("utf-8", "replace")

    def describe(self) -> str:
        return f"\n--- {self.name} (status {self.proc.poll()}), its output:\n{self.output()[-4000:]}"

    def write(self, data: bytes) -> None:
        self.proc.stdin.write(data)
        self.proc.stdin.flush()

    def stop(self) -> None:
        """
        SIGTERM the process group (SIGKILL after 5 s); safe to repeat.
        """
        for signum in (signal.SIGTERM, signal.SIGKILL):
            try:
                os.killpg(self.proc.pid, signum)
            except ProcessLookupError:
                break
            if self._groupEnded(5):
                break
        self.proc.wait(5)
        if self.proc.stdin:
            self.proc.stdin.close()

    def _groupEnded(self, timeout: float) -> bool:
        """
        Whether every process of the group (the command and what it ran)
        ended within C{timeout} seconds.
        """
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.proc.poll()  # (reaps the leader)
            try:
                os.killpg(self.proc.pid, 0)
            except ProcessLookupError:
                return True
            time.sleep(0.05)
        return False


class RecipeRun:
    """
    One run of a recipe: its hosts' directories, its commands' environment,
    which of its lines ran.

    @ivar namespace: the network namespace the commands run in, or C{None}.
    """

    def __init__(self, test, block: Block, namespace=None) -> None:
        self.test = test
        self.block = block
        self.commands = [parseLine(line) for line in block.lines if line.strip()]
        self.ran: set[int] = set()
        self.namespace = namespace
        self.root = tempfile.mkdtemp(prefix="vtr-", dir="/tmp")
        test.addCleanup(shutil.rmtree, self.root, True)
        self.bin = os.path.join(self.root, "bin")
        os.mkdir(self.bin)
        for name, args in _WRAPPERS.items():
            self._script(name, f'#!/bin/sh\nexec {shlex.quote(sys.executable)} {args} "$@"\n')
        for name in ("ssh", "scp"):
            self._script(name, f"#!{sys.executable}\n{_STANDIN}")
        self.processes: list[Process] = []

    def _script(self, name: str, text: str) -> None:
        path = os.path.join(self.bin, name)
        with open(path, "w") as f:
            f.write(text)
        os.chmod(path, 0o755)

    def host(self, name: str) -> str:
        """
        The directory of host C{name}, made with its C{tmp}, C{run}, C{srv}.
        """
        path = os.path.join(self.root, name)
        for sub in ("tmp", "run", "srv"):
            os.makedirs(os.path.join(path, sub), exist_ok=True)
        return path

    def path(self, text: str, host: str = "local") -> str:
        """
        C{text} (a command or a path) as it reads on C{host}.
        """
        here = self.host(host)
        text = _PATHS.sub(lambda m: f"{here}/{m.group(1)}/", text)
        return re.sub(r"(?<![\w./])docs/", os.path.join(ROOT, "docs") + "/", text)

    def env(self, host: str) -> dict:
        here = self.host(host)
        return ourEnv(PATH=f"{self.bin}:{os.environ['PATH']}", HOME=here,
                      TMPDIR=os.path.join(here, "tmp"), RECIPE_ROOT=self.root, RECIPE_HOST=host)

    def argv(self, command: str) -> list[str]:
        argv = ["sh", "-c", command]
        if self.namespace is not None:
            argv = ["ip", "netns", "exec", self.namespace.name, *argv]
        return argv

    def _take(self, index: int) -> Command:
        self.ran.add(index)
        return self.commands[index]

    def run(self, index: int, timeout: float = 60, status: int = 0) -> subprocess.CompletedProcess:
        """
        Run line C{index} to its end; fails unless it exits with C{status}.
        """
        return self.shell(self._take(index), timeout, status)

    def shell(self, command: Command, timeout: float = 60,
              status: int = 0) -> subprocess.CompletedProcess:
        """
        Run C{command} (a recipe's, or one setting the scene) to its end.
        """
        done = subprocess.run(
            self.argv(self.path(command.text, command.host)), env=self.env(command.host),
            cwd=self.host(command.host), capture_output=True, timeout=timeout)
        if done.returncode != status:
            raise AssertionError(
                f"{self.block.where()}: {command.host}$ {command.text}: exit status"
                f" {done.returncode}, not {status}\nstdout:\n{done.stdout.decode(errors='replace')}"
                f"\nstderr:\n{done.stderr.decode(errors='replace')}")
        return done

    def start(self, index: int, stdin: bool = False) -> Process:
        """
        Start line C{index} in the background (stopped when the test ends).
        """
        return self.background(self._take(index), stdin)

    def background(self, command: Command, stdin: bool = False) -> Process:
        n = len(self.processes)
        process = Process(
            f"{command.host}$ {command.text}", self.argv(self.path(command.text, command.host)),
            self.env(command.host), self.host(command.host),
            os.path.join(self.root, f"process{n}.log"), stdin)
        self.processes.append(process)
        self.test.addCleanup(process.stop)
        return process

    def waitFor(self, predicate, what: str, timeout: float = TIMEOUT) -> None:
        """
        Wait for C{predicate}, failing with the output of every process of
        the recipe if one ends or the time runs out.
        """
        running = [p for p in self.processes if p.running()]
        waitFor(predicate, what, timeout, procs=running, failIfEnded=True)

    def assertAllRan(self) -> None:
        left = [self.commands[i].text for i in range(len(self.commands)) if i not in self.ran]
        if left:
            raise AssertionError(f"recipe {self.block.name} ({self.block.where()}):"
                                 f" lines not run: {left}")
