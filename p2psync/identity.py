"""Device identity: Ed25519 keys, self-signed certificates, device ids and signatures.

A device id is derived from the public key alone, so it never changes while the key lives. It is
written for humans: base32, seven groups of five, with a check character that catches any single
mistyped character. Pure: no file, socket or trio I/O here. The one clock read is the default of
`now` when a certificate is issued, to stamp its validity; tests pass `now`.
"""

from __future__ import annotations

import base64
import datetime
import hashlib
import secrets
from functools import lru_cache

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from nacl.exceptions import BadSignatureError
from nacl.signing import SigningKey, VerifyKey

ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567"  # RFC 4648 base32
BODY_LENGTH = 34  # 170 bits of the key hash
ID_LENGTH = BODY_LENGTH + 1  # plus the check character
GROUP_LENGTH = 5
PUBLIC_KEY_LENGTH = 32
CERT_VALIDITY_YEARS = 30

# Characters people type for base32 letters that look alike; base32 has no 0, 1 or 8.
_LOOKALIKES = str.maketrans({"0": "O", "1": "I", "8": "B"})
_SEPARATORS = str.maketrans("", "", " \t\r\n-")


class InvalidDeviceId(ValueError):
    """Text that is not a device id; the message says what is wrong with it."""


class InvalidCertificate(ValueError):
    """Bytes that are not a usable device certificate (or not the one for a given key)."""


class InvalidPrivateKey(ValueError):
    """Bytes that are not an unencrypted Ed25519 private key in PEM."""


def device_id_from_public_key(raw: bytes) -> str:
    if len(raw) != PUBLIC_KEY_LENGTH:
        raise ValueError(f"an Ed25519 public key has {PUBLIC_KEY_LENGTH} bytes, got {len(raw)}")
    digest = hashlib.sha256(raw).digest()
    body = base64.b32encode(digest).decode("ascii")[:BODY_LENGTH]
    return _group(body + _check_character(body))


def compact_id(text: str) -> str:
    """A typed id (or part of one) as bare base32: case, spaces, dashes and look-alikes undone."""
    return text.translate(_SEPARATORS).upper().translate(_LOOKALIKES)


def parse_device_id(text: str) -> str:
    """Canonical form of a device id typed by a person: case, spaces and dashes do not matter."""
    compact = compact_id(text)
    strangers = sorted({c for c in compact if c not in ALPHABET})
    if strangers:
        shown = ", ".join(repr(c) for c in strangers)
        raise InvalidDeviceId(
            f"device id may only contain letters A-Z and digits 2-7, found {shown}"
        )
    if len(compact) != ID_LENGTH:
        raise InvalidDeviceId(f"device id must have {ID_LENGTH} letters/digits, got {len(compact)}")
    body, check = compact[:BODY_LENGTH], compact[BODY_LENGTH]
    if _check_character(body) != check:
        raise InvalidDeviceId("device id has a typo: check character does not match")
    return _group(compact)


def short_id(device_id: str) -> str:
    """The first group of a device id, enough to tell a household's devices apart on screen."""
    return device_id[:GROUP_LENGTH]


def _group(compact: str) -> str:
    return "-".join(
        compact[start : start + GROUP_LENGTH] for start in range(0, len(compact), GROUP_LENGTH)
    )


def _check_character(body: str) -> str:
    """Luhn mod 32: doubling every second character from the right makes any one substitution
    change the sum, because doubling-and-folding is a permutation of 0..31."""
    base = len(ALPHABET)
    total = 0
    for position, character in enumerate(reversed(body)):
        value = ALPHABET.index(character) * (2 if position % 2 == 0 else 1)
        total += value // base + value % base
    return ALPHABET[-total % base]


def verify_signature(public_key: bytes, signature: bytes, data: bytes) -> bool:
    """True only for a valid Ed25519 signature; any malformed input is simply not valid."""
    try:
        _verify_key(public_key).verify(data, signature)
    except (BadSignatureError, ValueError, TypeError):
        return False
    return True


# Log signatures go through libsodium (PyNaCl), certificates and TLS through OpenSSL
# (cryptography): the same Ed25519 keys and signatures (RFC 8032), but libsodium checks one in
# half the time (61 against 118 us here) and signs in less than half (24 against 52 us). A
# received write's check was a third of applying it. A household's few keys are built once.
_verify_key = lru_cache(maxsize=1024)(VerifyKey)


def load_certificate(cert: bytes) -> x509.Certificate:
    """A self-signed Ed25519 certificate from PEM or DER, or InvalidCertificate."""
    try:
        if cert.lstrip().startswith(b"-----BEGIN"):
            certificate = x509.load_pem_x509_certificate(cert)
        else:
            certificate = x509.load_der_x509_certificate(cert)
    except (ValueError, TypeError) as exc:
        raise InvalidCertificate(f"not an X.509 certificate in PEM or DER ({exc})") from None
    try:
        key = certificate.public_key()
    except (ValueError, UnsupportedAlgorithm) as exc:
        raise InvalidCertificate(f"certificate has an unreadable public key ({exc})") from None
    if not isinstance(key, Ed25519PublicKey):
        raise InvalidCertificate(
            f"certificate key is {type(key).__name__}, not Ed25519 as p2psync devices use"
        )
    try:
        certificate.verify_directly_issued_by(certificate)
    except (ValueError, TypeError, InvalidSignature):
        raise InvalidCertificate("certificate is not self-signed by its own key") from None
    return certificate


def public_key_from_certificate(cert: bytes) -> bytes:
    return _raw_public_key(load_certificate(cert))


def device_id_from_certificate(cert: bytes) -> str:
    return device_id_from_public_key(public_key_from_certificate(cert))


def certificate_matches(cert_pem: bytes, device_id: str) -> bool:
    """True when `cert_pem` is a usable certificate of `device_id`; junk is simply not one
    (membership records replicated from elsewhere may hold anything)."""
    try:
        return device_id_from_certificate(cert_pem) == device_id
    except InvalidCertificate:
        return False


def cert_pem_from_der(der: bytes) -> bytes:
    """PEM of a device certificate; PEM input is checked and comes back normalised."""
    return load_certificate(der).public_bytes(serialization.Encoding.PEM)


def _raw_public_key(certificate: x509.Certificate) -> bytes:
    key = certificate.public_key()
    assert isinstance(key, Ed25519PublicKey)
    return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


class DeviceIdentity:
    """This device's long-term key and the certificate that presents it in TLS."""

    def __init__(self, private_key: Ed25519PrivateKey, certificate: x509.Certificate) -> None:
        self._private_key = private_key
        self._signing_key = SigningKey(
            private_key.private_bytes(
                serialization.Encoding.Raw,
                serialization.PrivateFormat.Raw,
                serialization.NoEncryption(),
            )
        )
        self.public_key: bytes = _raw_public_key(certificate)
        self.device_id: str = device_id_from_public_key(self.public_key)
        self.cert_pem: bytes = certificate.public_bytes(serialization.Encoding.PEM)
        self.cert_der: bytes = certificate.public_bytes(serialization.Encoding.DER)

    @classmethod
    def generate(cls, *, now: datetime.datetime | None = None) -> DeviceIdentity:
        """A new device: a fresh key and its certificate, valid from a day before `now`."""
        private_key = Ed25519PrivateKey.generate()
        return cls(private_key, _self_signed_certificate(private_key, now))

    @classmethod
    def reissue(cls, key_pem: bytes, *, now: datetime.datetime | None = None) -> DeviceIdentity:
        """The same device (same key, same id) with a newly issued certificate."""
        private_key = _load_private_key(key_pem)
        return cls(private_key, _self_signed_certificate(private_key, now))

    @classmethod
    def from_pem(cls, key_pem: bytes, cert_pem: bytes) -> DeviceIdentity:
        private_key = _load_private_key(key_pem)
        certificate = load_certificate(cert_pem)
        own_public_key = private_key.public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )
        if _raw_public_key(certificate) != own_public_key:
            raise InvalidCertificate("certificate does not belong to this private key")
        return cls(private_key, certificate)

    def key_pem(self) -> bytes:
        return self._private_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )

    def sign(self, data: bytes) -> bytes:
        return self._signing_key.sign(data).signature

    def __repr__(self) -> str:
        return f"DeviceIdentity({self.device_id})"


def _load_private_key(key_pem: bytes) -> Ed25519PrivateKey:
    try:
        private_key = serialization.load_pem_private_key(key_pem, password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
        raise InvalidPrivateKey(f"not an unencrypted private key in PEM ({exc})") from None
    if not isinstance(private_key, Ed25519PrivateKey):
        raise InvalidPrivateKey(
            f"private key is {type(private_key).__name__}, not Ed25519 as p2psync devices use"
        )
    return private_key


def _self_signed_certificate(
    private_key: Ed25519PrivateKey, now: datetime.datetime | None
) -> x509.Certificate:
    created = datetime.datetime.now(datetime.UTC) if now is None else now
    raw = private_key.public_key().public_bytes(
        serialization.Encoding.Raw, serialization.PublicFormat.Raw
    )
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, device_id_from_public_key(raw))])
    return (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(private_key.public_key())
        .serial_number(secrets.randbits(159) | 1)  # positive, non-zero, at most 20 octets
        # A day of slack for peers whose clock runs behind ours.
        .not_valid_before(created - datetime.timedelta(days=1))
        .not_valid_after(_years_later(created, CERT_VALIDITY_YEARS))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
            ),
            critical=False,
        )
        .sign(private_key, algorithm=None)
    )


def _years_later(moment: datetime.datetime, years: int) -> datetime.datetime:
    try:
        return moment.replace(year=moment.year + years)
    except ValueError:  # 29 February in a year that has none
        return moment.replace(year=moment.year + years, day=28)
