"""Real TLS 1.3 over real TCP on 127.0.0.1 between devices made by identity.py.

A side whose handshake fails closes its TCP connection at once (as peers.py does): trio raises
without sending the TLS alert, so the other side learns of the refusal as an unexpected EOF.
"""

import datetime
import ssl
from dataclasses import dataclass
from pathlib import Path

import pytest
import trio

from p2psync import tls
from p2psync.identity import DeviceIdentity, InvalidCertificate

TIMEOUT = 5
A, B, STRANGER = DeviceIdentity.generate(), DeviceIdentity.generate(), DeviceIdentity.generate()


@dataclass
class Device:
    identity: DeviceIdentity
    cert_file: Path
    key_file: Path

    def context(self, trusted, *, server_side):
        return tls.make_ssl_context(self.cert_file, self.key_file, trusted, server_side=server_side)


@pytest.fixture
def device(tmp_path):
    def make(identity):
        cert_file = tmp_path / f"{identity.device_id}.crt"
        key_file = tmp_path / f"{identity.device_id}.key"
        cert_file.write_bytes(identity.cert_pem)
        key_file.write_bytes(identity.key_pem())
        return Device(identity, cert_file, key_file)

    return make


async def connect(server_context, client_context):
    """A server and a client SSLStream over one loopback TCP connection, handshakes not yet run."""
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    port = listeners[0].socket.getsockname()[1]
    client_tcp = await trio.open_tcp_stream("127.0.0.1", port)  # the backlog completes it
    server_tcp = await listeners[0].accept()
    await listeners[0].aclose()
    return (
        trio.SSLStream(server_tcp, server_context, server_side=True),
        trio.SSLStream(client_tcp, client_context, server_side=False),
    )


async def handshake(stream):
    """None on success, else the error; a refusing side drops the connection."""
    try:
        await stream.do_handshake()
    except trio.BrokenResourceError as exc:
        await trio.aclose_forcefully(stream)
        return exc
    return None


async def handshake_both(server, client):
    errors = {}

    async def run(side, stream):
        errors[side] = await handshake(stream)

    with trio.fail_after(TIMEOUT):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(run, "server", server)
            nursery.start_soon(run, "client", client)
    return errors["server"], errors["client"]


def refused_for(error, reason):
    assert isinstance(error, trio.BrokenResourceError)
    assert isinstance(error.__cause__, ssl.SSLError), error.__cause__
    return reason in str(error.__cause__)


async def test_trusted_devices_connect_and_each_sees_the_others_id(device):
    a, b = device(A), device(B)
    # Several anchors, in PEM and DER, duplicates included.
    server_trust = [STRANGER.cert_der, B.cert_pem, B.cert_der]
    server_context = a.context(server_trust, server_side=True)
    server, client = await connect(server_context, b.context([A.cert_pem], server_side=False))
    assert await handshake_both(server, client) == (None, None)
    assert server_context.cert_store_stats()["x509"] == 2
    assert tls.peer_device_id(server) == B.device_id
    assert tls.peer_device_id(client) == A.device_id
    assert server.version() == client.version() == "TLSv1.3"
    with trio.fail_after(TIMEOUT):
        await client.send_all(b"hello from B")
        assert await server.receive_some() == b"hello from B"
        await server.send_all(b"hello from A")
        assert await client.receive_some() == b"hello from A"
        await client.aclose()
        assert await server.receive_some() == b"", "a clean close is a TLS close_notify"
        await server.aclose()


async def test_untrusted_client_is_refused_after_its_own_handshake_completes(device):
    a, stranger = device(A), device(STRANGER)
    server, client = await connect(
        a.context([B.cert_pem], server_side=True), stranger.context([A.cert_pem], server_side=False)
    )
    server_error, client_error = await handshake_both(server, client)
    # TLS 1.3: the client sends its certificate with its last flight and is done; only the
    # server judges that certificate.
    assert client_error is None
    assert isinstance(server_error, trio.BrokenResourceError)
    assert isinstance(server_error.__cause__, ssl.SSLCertVerificationError)
    with trio.fail_after(TIMEOUT), pytest.raises(trio.BrokenResourceError) as first_read:
        await client.receive_some()
    assert refused_for(first_read.value, "EOF")


async def test_untrusted_server_is_refused_by_the_client(device):
    stranger, b = device(STRANGER), device(B)
    server, client = await connect(
        stranger.context([B.cert_pem], server_side=True), b.context([A.cert_pem], server_side=False)
    )
    server_error, client_error = await handshake_both(server, client)
    assert isinstance(client_error, trio.BrokenResourceError)
    assert isinstance(client_error.__cause__, ssl.SSLCertVerificationError)
    assert refused_for(server_error, "EOF")


@pytest.mark.parametrize("side", ["server", "client"])
async def test_an_empty_trusted_set_refuses_everyone(device, side):
    a, b = device(A), device(B)
    server_context = a.context([] if side == "server" else [B.cert_pem], server_side=True)
    client_context = b.context([] if side == "client" else [A.cert_pem], server_side=False)
    refusing = server_context if side == "server" else client_context
    assert refusing.cert_store_stats()["x509"] == 0, "no system CAs to fall back on"
    server_error, client_error = await handshake_both(
        *await connect(server_context, client_context)
    )
    refusal = server_error if side == "server" else client_error
    assert isinstance(refusal.__cause__, ssl.SSLCertVerificationError)


@pytest.mark.parametrize("old_side", ["client", "server"])
async def test_tls_1_2_is_refused(device, old_side):
    a, b = device(A), device(B)
    server_context = a.context([B.cert_pem], server_side=True)
    client_context = b.context([A.cert_pem], server_side=False)
    old = client_context if old_side == "client" else server_context
    old.minimum_version = old.maximum_version = ssl.TLSVersion.TLSv1_2
    server_error, client_error = await handshake_both(
        *await connect(server_context, client_context)
    )
    # The server chooses the version, so it is the one that finds no common version.
    assert refused_for(server_error, "UNSUPPORTED_PROTOCOL")
    assert refused_for(client_error, "EOF")


async def test_a_client_without_certificate_is_refused(device):
    a = device(A)
    anonymous = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    anonymous.check_hostname = False
    anonymous.load_verify_locations(cadata=A.cert_pem.decode())
    server_error, _ = await handshake_both(
        *await connect(a.context([B.cert_pem], server_side=True), anonymous)
    )
    assert refused_for(server_error, "PEER_DID_NOT_RETURN_A_CERTIFICATE")


async def test_certificate_dates_do_not_matter_only_membership_does(device):
    # Boards without a real-time clock boot in 1970; a pinned certificate must still work.
    expired = DeviceIdentity.generate(now=datetime.datetime(1980, 1, 1, tzinfo=datetime.UTC))
    not_yet_valid = DeviceIdentity.generate(now=datetime.datetime(2200, 1, 1, tzinfo=datetime.UTC))
    old, future = device(expired), device(not_yet_valid)
    server, client = await connect(
        old.context([not_yet_valid.cert_pem], server_side=True),
        future.context([expired.cert_pem], server_side=False),
    )
    assert await handshake_both(server, client) == (None, None)
    assert tls.peer_device_id(server) == not_yet_valid.device_id


async def test_the_exact_certificate_is_pinned_not_just_the_key(device):
    reissued_a = device(DeviceIdentity.reissue(A.key_pem()))
    b = device(B)
    server_error, _ = await handshake_both(
        *await connect(
            b.context([A.cert_pem], server_side=True),
            reissued_a.context([B.cert_pem], server_side=False),
        )
    )
    assert isinstance(server_error.__cause__, ssl.SSLCertVerificationError)


@pytest.mark.parametrize("server_side", [True, False])
def test_context_settings(device, server_side):
    context = device(A).context([B.cert_pem], server_side=server_side)
    assert context.minimum_version == context.maximum_version == ssl.TLSVersion.TLSv1_3
    assert context.verify_mode == ssl.CERT_REQUIRED
    assert not context.check_hostname
    assert context.cert_store_stats()["x509"] == 1
    if server_side:
        assert context.num_tickets == 0


def test_unusable_trusted_certificate_is_named(device):
    with pytest.raises(InvalidCertificate, match="trusted certificate #1"):
        device(A).context([B.cert_pem, b"garbage"], server_side=True)


class FakeConnection:
    def __init__(self, der):
        self.der = der

    def getpeercert(self, binary_form=False):
        assert binary_form
        return self.der


@pytest.mark.parametrize(
    ("der", "message"),
    [(None, "no certificate"), (b"\x30\x03junk", "not a device certificate")],
)
def test_peer_device_id_refuses_what_names_no_device(der, message):
    with pytest.raises(tls.PeerRefused, match=message):
        tls.peer_device_id(FakeConnection(der))
