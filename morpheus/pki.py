"""The per-forest certificate authority of mutual-TLS routes, and the node certificates it signs.

Every forest gets its own CA when it is planted; every node gets a certificate whose subject
alternative names are exactly the node's addresses, valid for both ends of a route (server
and client authentication).  nats-server then refuses a route from a server without a
certificate of this forest, and a route dialling an address the forest no longer holds stops
at the TLS handshake, before it could send the route password.

Keys are ECDSA P-256: small (user-data is limited to 32 KiB) and accepted by Go's TLS stack.
``cryptography`` is imported only here, and only when a certificate is made or read.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from pydantic import SecretStr

from morpheus.blueprint import Frozen, Pem, RouteTls

if TYPE_CHECKING:
    from cryptography import x509
    from cryptography.hazmat.primitives.asymmetric.ec import EllipticCurvePrivateKey
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

#: How long a forest's CA and its node certificates are valid.  Long, on purpose: a cloud node
#: cannot be given a new certificate until the SSH node channel exists, and an expired one
#: would cut its routes.  ``morpheus rotate`` replaces node certificates where it can.
VALIDITY = timedelta(days=3650)
#: Certificates start to be valid this much before they are made, for clocks a little behind.
CLOCK_SKEW = timedelta(hours=1)


class ForestCA(Frozen):
    """A forest's CA: its certificate (public) and private key (registry only, mode 0600)."""

    cert: Pem
    key: SecretStr

    @classmethod
    def generate(cls, label: str, now: datetime) -> ForestCA:
        """A new CA whose name carries ``label`` (the forest's id or planting run)."""
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.x509.oid import NameOID

        key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"morpheus {label} route CA")])
        public = key.public_key()
        certificate = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(public)
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - CLOCK_SKEW)
            .not_valid_after(now + VALIDITY)
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=False,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=True,
                    crl_sign=True,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
            .sign(key, hashes.SHA256())
        )
        return cls(cert=_pem(certificate), key=SecretStr(_key_pem(key)))

    def issue(self, node_id: str, addresses: Sequence[str], now: datetime) -> NodeCertificate:
        """A certificate for ``node_id`` naming exactly ``addresses`` (IPs or host names)."""
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

        if not addresses:
            raise ValueError(f"{node_id} has no address to name in its certificate")
        ca_cert = x509.load_pem_x509_certificate(self.cert.encode())
        ca_key = serialization.load_pem_private_key(
            self.key.get_secret_value().encode(), password=None
        )
        assert isinstance(ca_key, ec.EllipticCurvePrivateKey)
        key = ec.generate_private_key(ec.SECP256R1())
        public = key.public_key()
        not_after = min(now + VALIDITY, ca_cert.not_valid_after_utc)
        certificate = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, node_id)]))
            .issuer_name(ca_cert.subject)
            .public_key(public)
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - CLOCK_SKEW)
            .not_valid_after(not_after)
            .add_extension(x509.SubjectAlternativeName(_names(addresses)), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=False,
                    crl_sign=False,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            # Both ends of a route: the dialling server presents it as a client certificate.
            .add_extension(
                x509.ExtendedKeyUsage(
                    [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
                ),
                critical=False,
            )
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
                critical=False,
            )
            .sign(ca_key, hashes.SHA256())
        )
        return NodeCertificate(
            cert=_pem(certificate), key=SecretStr(_key_pem(key)), addresses=tuple(addresses)
        )


class NodeCertificate(Frozen):
    """One node's route certificate, its private key, and the addresses it names."""

    cert: Pem
    key: SecretStr
    addresses: tuple[str, ...]

    def route_tls(self, ca: ForestCA) -> RouteTls:
        """What the node's nats.conf and files need (the CA's certificate, never its key)."""
        return RouteTls(ca_cert=ca.cert, cert=self.cert, key=self.key)


def certificate_names(cert_pem: str) -> list[str]:
    """The addresses and host names a PEM certificate's SAN extension lists."""
    from cryptography import x509

    certificate = x509.load_pem_x509_certificate(cert_pem.encode())
    san = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    ips = [str(ip) for ip in san.get_values_for_type(x509.IPAddress)]
    return ips + list(san.get_values_for_type(x509.DNSName))


def _names(addresses: Sequence[str]) -> list[x509.GeneralName]:
    from cryptography import x509

    names: list[x509.GeneralName] = []
    for address in dict.fromkeys(addresses):
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(address)))
        except ValueError:
            names.append(x509.DNSName(address))
    return names


def _pem(certificate: x509.Certificate) -> str:
    from cryptography.hazmat.primitives import serialization

    return certificate.public_bytes(serialization.Encoding.PEM).decode()


def _key_pem(key: EllipticCurvePrivateKey) -> str:
    from cryptography.hazmat.primitives import serialization

    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()


class SshKeyPair(Frozen):
    """An ed25519 SSH key: a node's host key (made here, handed over in user-data, its public
    half pinned) or a forest's client key (authorized on its nodes for one command)."""

    public: str
    private: SecretStr

    @classmethod
    def generate(cls) -> SshKeyPair:
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

        key = Ed25519PrivateKey.generate()
        private = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.OpenSSH,
            serialization.NoEncryption(),
        ).decode()
        return cls(public=_ssh_public(key), private=SecretStr(private))

    @classmethod
    def from_private(cls, private: str) -> SshKeyPair:
        """The pair of a recorded private key; ``ValueError`` when it is not an ed25519 key."""
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

        key = serialization.load_ssh_private_key(private.encode(), password=None)
        if not isinstance(key, Ed25519PrivateKey):
            raise ValueError("not an ed25519 key")
        return cls(public=_ssh_public(key), private=SecretStr(private))


def _ssh_public(key: Ed25519PrivateKey) -> str:
    from cryptography.hazmat.primitives import serialization

    return (
        key.public_key()
        .public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
        .decode()
    )
