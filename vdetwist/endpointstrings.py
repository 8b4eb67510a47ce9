"""
Twisted endpoint descriptions as vdetwist takes them (C{twistd vde --listen},
C{endpoint://}): Twisted's own parsers, with a one-line error where they
raise a bare traceback (pyOpenSSL missing, a PEM file missing or holding the
wrong thing), and TLS clients that check the server when given a CA.

C{ssl:} clients given a CA directory (C{caCertsDir=}, or C{trustRoots=} as
Twisted's C{tls:} client names it) check the server's certificate against
it and its name against C{host} (Twisted's C{ssl:} checks only the chain
unless C{hostname=} is given too).  Without a CA the link is encrypted but
anyone on the path may pose as the server: that is logged as a warning.
"""

from __future__ import annotations

import os

from twisted.internet.endpoints import clientFromString, quoteStringArgument, serverFromString
from twisted.internet.interfaces import IStreamClientEndpoint, IStreamServerEndpoint
from twisted.logger import Logger

log = Logger()

#: What to install for TLS.
TLS_INSTALL = "pip install 'vdetwist[tls]'"

#: Twisted's TLS client endpoints (C{tls:} has no server).
_TLS_CLIENTS = ("ssl", "tls")


class EndpointError(ValueError):
    """
    An endpoint description cannot be used; the message says why, in one
    line (without the description: the caller names it).
    """


def splitDescription(description: str) -> tuple[list[str], dict[str, str]]:
    """
    The positional and keyword fields of a Twisted endpoint description:
    C{:} separates fields, the first C{=} of a field makes it a keyword, a
    backslash protects the next character (as L{quoteStringArgument} writes).
    """
    fields: list[list[str]] = [[]]
    part: list[str] = []
    chars = iter(description)
    for c in chars:
        if c == "\\":
            part.append(next(chars, ""))
        elif c == ":":
            fields[-1].append("".join(part))
            fields.append([])
            part = []
        elif c == "=" and not fields[-1]:
            fields[-1].append("".join(part))
            part = []
        else:
            part.append(c)
    fields[-1].append("".join(part))
    args = [f[0] for f in fields if len(f) == 1]
    kwargs = {f[0]: f[1] for f in fields if len(f) == 2}
    return args, kwargs


def requireTLS() -> None:
    """
    Fail in one line, saying what to install, if TLS cannot work here.
    """
    try:
        import OpenSSL  # noqa: F401
        import service_identity  # noqa: F401
    except ImportError as e:
        raise EndpointError(f"TLS needs {e.name} (not installed): {TLS_INSTALL}") from None


def _checkPEM(path: str, what: str, marker: str, option: str, hint: str = "") -> None:
    """
    Check that the PEM file C{path} (given as C{option=}) holds a C{what}.
    """
    try:
        with open(path, "rb") as f:
            text = f.read(1 << 20)
    except OSError as e:
        raise EndpointError(f"{option}={path}: {e.strerror}") from None
    if b"-----BEGIN " not in text or marker.encode() not in text:
        raise EndpointError(
            f"{option}={path} holds no {what} (no PEM block ending in '{marker}'){hint};"
            " the README's TLS recipe makes a key and a certificate")


def _checkCADirectory(path: str, option: str) -> None:
    try:
        names = os.listdir(path)
    except OSError as e:
        raise EndpointError(f"{option}={path}: {e.strerror} (a directory of CA *.pem files)") from None
    if not any(name.endswith(".pem") for name in names):
        raise EndpointError(f"{option}={path} holds no *.pem certificate")


#: An example of each kind of description, for the error message.
_EXAMPLES = {"server": "tcp:5000:interface=127.0.0.1", "client": "tcp:host=192.0.2.1:port=5000"}


def failureMessage(e: BaseException) -> str:
    """
    One line for an exception from Twisted's endpoints or TLS: pyOpenSSL's
    errors are lists of C{(library, function, reason)}.
    """
    try:
        from service_identity import VerificationError
    except ImportError:
        pass
    else:
        if isinstance(e, VerificationError):
            return f"the server's certificate is for another name than host= ({e})"
    if e.args and isinstance(e.args[0], list):
        reasons = [str(r[-1]) for r in e.args[0] if isinstance(r, tuple) and r]
        if reasons:
            message = "; ".join(reasons)
            if "certificate verify failed" in message:
                message += " (the server's certificate is not signed by a CA of caCertsDir=)"
            return message
    return str(e) or type(e).__name__


def _explain(kind: str, e: Exception) -> EndpointError:
    """
    One line for whatever Twisted's C{kind} parser raised.
    """
    if isinstance(e, OSError):
        reason = " ".join(str(part) for part in (e.filename, e.strerror) if part)
    elif isinstance(e, (ValueError, KeyError, TypeError)):
        reason = (f"not a Twisted {kind} endpoint description ({e or type(e).__name__});"
                  f" e.g. {_EXAMPLES[kind]}")
    else:
        reason = failureMessage(e)
    return EndpointError(reason)


def serverEndpoint(reactor, description: str) -> IStreamServerEndpoint:
    """
    Twisted's server endpoint for C{description}, checking what an C{ssl:}
    one needs first (C{privateKey} defaults to C{server.pem}, C{certKey} to
    C{privateKey}, as in Twisted).

    @raise EndpointError: with the problem in one line.
    """
    args, kwargs = splitDescription(description)
    if args[0] == "ssl":
        requireTLS()
        key = kwargs.get("privateKey", "server.pem")
        _checkPEM(key, "private key", "PRIVATE KEY-----", "privateKey")
        if "certKey" in kwargs:
            _checkPEM(kwargs["certKey"], "certificate", "CERTIFICATE-----", "certKey")
        else:
            _checkPEM(key, "certificate", "CERTIFICATE-----", "privateKey",
                      ": name the certificate's file with certKey=")
    try:
        return serverFromString(reactor, description)
    except Exception as e:
        raise _explain("server", e) from None


def clientEndpoint(reactor, description: str) -> IStreamClientEndpoint:
    """
    Twisted's client endpoint for C{description}; an C{ssl:} one given a CA
    (C{caCertsDir=} or C{trustRoots=}) also checks the server's name
    (C{host=}, unless C{hostname=} says otherwise).

    @raise EndpointError: with the problem in one line.
    """
    args, kwargs = splitDescription(description)
    if args[0] in _TLS_CLIENTS:
        requireTLS()
        for option in ("certKey", "certificate"):
            if option in kwargs:
                _checkPEM(kwargs[option], "certificate", "CERTIFICATE-----", option)
        if "privateKey" in kwargs:
            _checkPEM(kwargs["privateKey"], "private key", "PRIVATE KEY-----", "privateKey")
        for option in ("caCertsDir", "trustRoots"):
            if option in kwargs:
                _checkCADirectory(kwargs[option], option)
    if args[0] == "ssl":
        description = _verifyingSSL(description, args, kwargs)
    try:
        return clientFromString(reactor, description)
    except Exception as e:
        raise _explain("client", e) from None


def _verifyingSSL(description: str, args: list[str], kwargs: dict[str, str]) -> str:
    """
    An C{ssl:} client description that checks the server's name whenever it
    checks its certificate.
    """
    if "trustRoots" in kwargs:
        if "caCertsDir" in kwargs:
            raise EndpointError("give caCertsDir= or trustRoots=, not both")
        kwargs["caCertsDir"] = kwargs.pop("trustRoots")
    elif "caCertsDir" not in kwargs:
        if "hostname" not in kwargs:
            log.warn(
                "{description}: the server's certificate is not checked (no caCertsDir=):"
                " the link is encrypted, but anyone on the path may pose as the server",
                description=description)
        return description
    host = kwargs.get("host", args[1] if len(args) > 1 else None)
    if host is not None:
        kwargs.setdefault("hostname", host)
    return ":".join([quoteStringArgument(a) for a in args]
                    + [f"{k}={quoteStringArgument(v)}" for k, v in kwargs.items()])
