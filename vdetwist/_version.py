"""
The one place vdetwist's version is written: setup.cfg reads it from here
(C{attr:}), and every command's C{--version} prints it.
"""

__version__ = "0.1.0"


def versionLine(program: str) -> str:
    """
    What C{PROGRAM --version} prints: the program, the project (so that
    ours can be told from the C tools of the same name on C{PATH}) and the
    version.
    """
    return f"{program} (vdetwist) {__version__}"
