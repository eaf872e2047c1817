import base64
import datetime
import hashlib

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from hypothesis import given
from hypothesis import strategies as st

from p2psync import identity
from p2psync.identity import (
    ALPHABET,
    DeviceIdentity,
    InvalidCertificate,
    InvalidDeviceId,
    InvalidPrivateKey,
)

UTC = datetime.UTC
public_keys = st.binary(min_size=32, max_size=32)
DEVICE = DeviceIdentity.generate()
OTHER = DeviceIdentity.generate()


def luhn_mod32_holds(compact: str) -> bool:
    """Independent check: with the check character included, weights 1, 2, 1, ... from the right
    (each product folded into base 32) sum to 0 mod 32."""
    total = 0
    for position, character in enumerate(reversed(compact)):
        value = ALPHABET.index(character) * (1 + position % 2)
        total += value // 32 + value % 32
    return total % 32 == 0


def compact(device_id: str) -> str:
    return device_id.replace("-", "")


def test_device_id_of_a_fixed_key_never_changes():
    # Ids are stored in configs and typed by people: this value is a contract.
    expected = "MZUHV-LPYMK-6XO3E-PYGFY-5H4OE-AEJOF-EFN37"
    assert identity.device_id_from_public_key(bytes(32)) == expected


@given(public_keys)
def test_device_id_is_the_key_hash_grouped_with_a_valid_check_character(raw):
    device_id = identity.device_id_from_public_key(raw)
    groups = device_id.split("-")
    assert [len(g) for g in groups] == [5] * 7
    body = base64.b32encode(hashlib.sha256(raw).digest()).decode()[:34]
    assert compact(device_id)[:34] == body
    assert luhn_mod32_holds(compact(device_id))
    assert identity.parse_device_id(device_id) == device_id


@given(public_keys, st.integers(0, 34), st.sampled_from(ALPHABET))
def test_any_single_substitution_is_caught(raw, position, replacement):
    letters = list(compact(identity.device_id_from_public_key(raw)))
    if letters[position] == replacement:
        return
    letters[position] = replacement
    with pytest.raises(InvalidDeviceId, match="check character does not match"):
        identity.parse_device_id("".join(letters))


@given(public_keys, st.data())
def test_sloppy_typing_gives_the_canonical_form(raw, data):
    device_id = identity.device_id_from_public_key(raw)
    typed = ""
    for character in compact(device_id):
        typed += data.draw(st.sampled_from(["", " ", "-", "--", "\t"]))
        typed += data.draw(st.sampled_from([character, character.lower()]))
    typed += data.draw(st.sampled_from(["", " ", "-", "\n"]))
    assert identity.parse_device_id(typed) == device_id


@given(public_keys)
def test_digits_that_look_like_letters_are_read_as_those_letters(raw):
    device_id = identity.device_id_from_public_key(raw)
    typed = device_id.replace("O", "0").replace("I", "1").replace("B", "8")
    assert identity.parse_device_id(typed) == device_id


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("MZUHV-LPYMK-6X", "must have 35 letters/digits, got 12"),
        ("", "must have 35 letters/digits, got 0"),
        ("MZUHV-LPYMK-6XO3E-PYGFY-5H4OE-AEJOF-EFN37A", "got 36"),
        ("MZUHV-LPYMK-6XO3E-PYGFY-5H4OE-AEJOF-EFN39", "letters A-Z and digits 2-7, found '9'"),
        ("MZUHV_LPYMK!6XO3E-PYGFY-5H4OE-AEJOF-EFN37", "found '!', '_'"),
        ("MZUHV-LPYMK-6XO3E-PYGFY-5H4OE-AEJOF-EFN36", "has a typo: check character"),
    ],
)
def test_bad_device_ids_are_explained(text, message):
    with pytest.raises(InvalidDeviceId, match=message):
        identity.parse_device_id(text)


def test_short_id_is_the_first_group():
    assert identity.short_id("MZUHV-LPYMK-6XO3E-PYGFY-5H4OE-AEJOF-EFN37") == "MZUHV"


def test_generated_identity_is_consistent():
    assert len(DEVICE.public_key) == 32
    assert DEVICE.device_id == identity.device_id_from_public_key(DEVICE.public_key)
    assert DEVICE.device_id != OTHER.device_id
    assert identity.device_id_from_certificate(DEVICE.cert_pem) == DEVICE.device_id
    assert identity.device_id_from_certificate(DEVICE.cert_der) == DEVICE.device_id
    assert identity.cert_pem_from_der(DEVICE.cert_der) == DEVICE.cert_pem
    assert DEVICE.key_pem().startswith(b"-----BEGIN PRIVATE KEY-----")  # PKCS8
    assert DEVICE.device_id in repr(DEVICE)
    assert b"PRIVATE" not in repr(DEVICE).encode()


def test_certificate_profile():
    created = datetime.datetime(2024, 5, 17, 12, 30, tzinfo=UTC)
    device = DeviceIdentity.generate(now=created)
    cert = x509.load_pem_x509_certificate(device.cert_pem)
    assert cert.subject == cert.issuer
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == device.device_id
    assert cert.not_valid_before_utc == created - datetime.timedelta(days=1)
    assert cert.not_valid_after_utc == datetime.datetime(2054, 5, 17, 12, 30, tzinfo=UTC)
    constraints = cert.extensions.get_extension_for_class(x509.BasicConstraints)
    assert constraints.critical and not constraints.value.ca
    # OpenSSL checks the purpose: both are needed because every device is client and server.
    usages = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert set(usages) == {ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH}
    cert.verify_directly_issued_by(cert)
    assert 0 < cert.serial_number < 2**159


def test_serial_numbers_are_random():
    serials = {x509.load_der_x509_certificate(d.cert_der).serial_number for d in (DEVICE, OTHER)}
    assert len(serials) == 2


def test_certificate_made_on_29_february_ends_on_28_february():
    device = DeviceIdentity.generate(now=datetime.datetime(2028, 2, 29, tzinfo=UTC))
    cert = x509.load_der_x509_certificate(device.cert_der)
    assert cert.not_valid_after_utc == datetime.datetime(2058, 2, 28, tzinfo=UTC)


def test_signatures_verify_only_for_the_signer_and_the_data():
    signature = DEVICE.sign(b"chain head")
    assert len(signature) == 64
    assert identity.verify_signature(DEVICE.public_key, signature, b"chain head")
    assert not identity.verify_signature(DEVICE.public_key, signature, b"chain head!")
    assert not identity.verify_signature(OTHER.public_key, signature, b"chain head")


def test_signatures_are_openssls_ed25519_both_ways():
    """Log signatures are made and checked with libsodium; peers of earlier releases, and the
    certificates, use OpenSSL's Ed25519: each must accept the other's."""
    ours = DEVICE.sign(b"chain head")
    openssl_key = Ed25519PublicKey.from_public_bytes(DEVICE.public_key)
    openssl_key.verify(ours, b"chain head")  # raises unless valid
    private_key = Ed25519PrivateKey.generate()
    public_key = private_key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    theirs = private_key.sign(b"chain head")
    assert identity.verify_signature(public_key, theirs, b"chain head")
    assert not identity.verify_signature(public_key, theirs, b"chain head!")


def test_a_key_that_is_no_curve_point_verifies_nothing():
    assert not identity.verify_signature(b"\xff" * 32, b"\x00" * 64, b"data")
    assert not identity.verify_signature(b"\x00" * 32, b"\x00" * 64, b"data")


@given(st.binary(max_size=40), st.binary(max_size=80), st.binary(max_size=10))
def test_verify_signature_never_raises_on_garbage(public_key, signature, data):
    assert identity.verify_signature(public_key, signature, data) in (True, False)


def test_verify_signature_rejects_non_bytes_without_raising():
    assert not identity.verify_signature(None, b"", b"")  # type: ignore[arg-type]


def test_from_pem_round_trips_and_signs_as_the_same_device():
    loaded = DeviceIdentity.from_pem(DEVICE.key_pem(), DEVICE.cert_pem)
    assert loaded.device_id == DEVICE.device_id
    assert loaded.cert_der == DEVICE.cert_der
    assert identity.verify_signature(DEVICE.public_key, loaded.sign(b"x"), b"x")


def test_from_pem_refuses_a_certificate_of_another_key():
    with pytest.raises(InvalidCertificate, match="does not belong to this private key"):
        DeviceIdentity.from_pem(DEVICE.key_pem(), OTHER.cert_pem)


def test_from_pem_refuses_unusable_keys():
    with pytest.raises(InvalidPrivateKey, match="not an unencrypted private key"):
        DeviceIdentity.from_pem(b"-----BEGIN PRIVATE KEY-----\ngarbage\n", DEVICE.cert_pem)
    ec_key = ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    with pytest.raises(InvalidPrivateKey, match="not Ed25519"):
        DeviceIdentity.from_pem(ec_key, DEVICE.cert_pem)


def test_reissue_keeps_the_device_id_with_a_new_certificate():
    reissued = DeviceIdentity.reissue(DEVICE.key_pem())
    assert reissued.device_id == DEVICE.device_id
    assert reissued.cert_der != DEVICE.cert_der


def _certificate(subject_key, issuer_key, algorithm=None) -> bytes:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "x")])
    start = datetime.datetime(2024, 1, 1, tzinfo=UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(subject_key.public_key())
        .serial_number(1)
        .not_valid_before(start)
        .not_valid_after(start + datetime.timedelta(days=1))
        .sign(issuer_key, algorithm)
    )
    return cert.public_bytes(serialization.Encoding.PEM)


def test_only_self_signed_ed25519_certificates_are_device_certificates():
    ec_key = ec.generate_private_key(ec.SECP256R1())
    with pytest.raises(InvalidCertificate, match="not Ed25519"):
        identity.public_key_from_certificate(_certificate(ec_key, ec_key, hashes.SHA256()))
    subject, issuer = Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate()
    with pytest.raises(InvalidCertificate, match="not self-signed"):
        identity.public_key_from_certificate(_certificate(subject, issuer))
    assert len(identity.public_key_from_certificate(_certificate(subject, subject))) == 32


@given(st.binary(max_size=300))
def test_garbage_is_not_a_certificate(garbage):
    with pytest.raises(InvalidCertificate):
        identity.public_key_from_certificate(garbage)


def test_truncated_pem_is_not_a_certificate():
    with pytest.raises(InvalidCertificate, match=r"not an X\.509 certificate"):
        identity.device_id_from_certificate(DEVICE.cert_pem[:100])


def test_a_certificate_matches_only_its_own_device_id_and_junk_matches_none():
    device, other = identity.DeviceIdentity.generate(), identity.DeviceIdentity.generate()
    assert identity.certificate_matches(device.cert_pem, device.device_id)
    assert not identity.certificate_matches(other.cert_pem, device.device_id)
    assert not identity.certificate_matches(b"not a certificate", device.device_id)
