"""A peer connection's failures (pure, over trio's and ssl's exceptions): which errors mean the
connection broke, and how a failure is put in words for the log and a session's end reason.

Used by the listener and sessions (`peers.py`) and the dialers (`dialers.py`). It never handles,
retries or hides a failure: it only names it.
"""

import ssl

import trio

CONNECTION_ERRORS = (trio.BrokenResourceError, trio.ClosedResourceError, ssl.SSLError, OSError)


def first_reason(group: BaseExceptionGroup) -> str:
    first: BaseException = group
    while isinstance(first, BaseExceptionGroup):
        first = first.exceptions[0]
    return describe(first)


def describe(exc: BaseException) -> str:
    if isinstance(exc, trio.TooSlowError):
        return "timed out"
    if isinstance(exc, trio.BrokenResourceError) and exc.__cause__ is not None:
        exc = exc.__cause__
    if isinstance(exc, ssl.SSLCertVerificationError):
        return f"not a member of this household (certificate not trusted: {exc.verify_message})"
    if isinstance(exc, ssl.SSLError):
        return f"TLS failed: {exc.reason or exc}"
    return str(exc) or type(exc).__name__
