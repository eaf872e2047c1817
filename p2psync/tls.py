"""Mutual TLS 1.3 between paired devices: SSLContext construction and the peer's device id.

Trust is pinning: the certificates of the paired devices are the only trust anchors, each device
presents its own self-signed certificate, and both sides must present one. This module builds
contexts and reads peer certificates; it never opens sockets and never trusts system CAs.
"""

from __future__ import annotations

import ssl
from collections.abc import Iterable
from pathlib import Path
from typing import Protocol

from . import identity

# X509_V_FLAG_NO_CHECK_TIME (OpenSSL >= 1.1.0), which the ssl module does not name. A pinned
# certificate is trusted for as long as its device is a member; revocation goes through membership,
# not dates. Checking dates would only lock out devices whose clock is wrong, such as boards
# without a real-time clock that boot in 1970.
_NO_CHECK_TIME = 0x200000


class PeerRefused(ValueError):
    """The peer's certificate cannot name a device (missing, or not a device certificate)."""


class HasPeerCertificate(Protocol):
    """An ssl.SSLObject, ssl.SSLSocket or trio.SSLStream after its handshake."""

    def getpeercert(self, binary_form: bool = ...) -> object: ...


def make_ssl_context(
    cert_file: Path,
    key_file: Path,
    trusted_certs: Iterable[bytes],
    *,
    server_side: bool,
) -> ssl.SSLContext:
    """A context that speaks only TLS 1.3 and accepts only peers holding one of `trusted_certs`
    (PEM or DER). With no trusted certificates every peer is refused."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER if server_side else ssl.PROTOCOL_TLS_CLIENT)
    context.minimum_version = ssl.TLSVersion.TLSv1_3
    context.maximum_version = ssl.TLSVersion.TLSv1_3
    context.check_hostname = False  # identity is the pinned certificate, not a host name
    context.verify_mode = ssl.CERT_REQUIRED
    # No VERIFY_X509_PARTIAL_CHAIN: OpenSSL takes any self-signed certificate in the store as a
    # trust anchor, CA flag or not, and identity.load_certificate admits only self-signed ones.
    context.verify_flags = ssl.VerifyFlags(int(context.verify_flags) | _NO_CHECK_TIME)
    if server_side:
        context.num_tickets = 0  # every connection proves its identity afresh; tickets are waste
    context.load_cert_chain(certfile=cert_file, keyfile=key_file)
    anchors = _pem_bundle(trusted_certs)
    if anchors:
        context.load_verify_locations(cadata=anchors)
    return context


def _pem_bundle(trusted_certs: Iterable[bytes]) -> str:
    pems = []
    for index, cert in enumerate(trusted_certs):
        try:
            pems.append(identity.cert_pem_from_der(cert).decode("ascii"))
        except identity.InvalidCertificate as exc:
            raise identity.InvalidCertificate(f"trusted certificate #{index}: {exc}") from None
    return "".join(pems)


def peer_device_id(connection: HasPeerCertificate) -> str:
    """The device id of the peer's certificate, once the handshake is done."""
    der = connection.getpeercert(binary_form=True)
    if not isinstance(der, bytes) or not der:
        raise PeerRefused("peer presented no certificate")
    try:
        return identity.device_id_from_certificate(der)
    except identity.InvalidCertificate as exc:
        raise PeerRefused(f"peer certificate is not a device certificate: {exc}") from None
