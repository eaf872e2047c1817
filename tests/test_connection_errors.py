"""How a peer connection's failures are put in words (p2psync/connection_errors.py)."""

import ssl

import trio

from p2psync.connection_errors import CONNECTION_ERRORS, describe, first_reason


def untrusted_certificate() -> ssl.SSLCertVerificationError:
    error = ssl.SSLCertVerificationError(1, "certificate verify failed")
    error.verify_message = "self-signed certificate"
    return error


def test_a_timeout_and_a_bare_error_are_named_plainly() -> None:
    assert describe(trio.TooSlowError()) == "timed out"
    assert (
        describe(ConnectionRefusedError(111, "Connection refused"))
        == "[Errno 111] Connection refused"
    )
    assert describe(trio.ClosedResourceError()) == "ClosedResourceError"


def test_a_broken_stream_is_named_by_its_cause() -> None:
    broken = trio.BrokenResourceError()
    broken.__cause__ = untrusted_certificate()
    assert describe(broken) == (
        "not a member of this household (certificate not trusted: self-signed certificate)"
    )
    assert describe(trio.BrokenResourceError()) == "BrokenResourceError"


def test_other_tls_failures_name_their_reason() -> None:
    error = ssl.SSLError(1, "[SSL: WRONG_VERSION_NUMBER] wrong version number")
    error.reason = "WRONG_VERSION_NUMBER"
    assert describe(error) == "TLS failed: WRONG_VERSION_NUMBER"


def test_a_group_is_named_by_its_first_failure_however_deep() -> None:
    group = ExceptionGroup("outer", [ExceptionGroup("inner", [trio.TooSlowError()]), OSError()])
    assert first_reason(group) == "timed out"


def test_connection_errors_are_the_ones_a_session_ends_on_quietly() -> None:
    assert issubclass(ssl.SSLCertVerificationError, CONNECTION_ERRORS)
    assert issubclass(ConnectionResetError, CONNECTION_ERRORS)
    assert not issubclass(ValueError, CONNECTION_ERRORS)
