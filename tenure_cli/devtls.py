"""A development certificate authority for the broker's partner listener (SASL/SCRAM over TLS).

Development and tests only: a bank runs its own PKI (docs/partners.md). Nothing is downloaded;
the CA and the broker's certificate are generated here with `cryptography`, and the broker
reads a PEM key store (`ssl.keystore.type=PEM`), so no JDK keytool step is needed.

    python -m tenure_cli.devtls DIR      # writes DIR/ca.crt, DIR/ca.key, DIR/broker.pem
"""

from __future__ import annotations

import ipaddress
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

CA_FILE = "ca.crt"
CA_KEY_FILE = "ca.key"
BROKER_PEM = "broker.pem"


def _name(common_name: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Tenure development"),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


def ensure_dev_ca(directory: Path, hosts: tuple[str, ...] = ("127.0.0.1", "localhost")) -> Path:
    """Create the CA and the broker certificate once (idempotent); returns the CA file.

    The broker certificate names every host a partner may dial (IP and DNS SANs), so clients
    verify the hostname as they would in production.
    """
    directory.mkdir(parents=True, exist_ok=True)
    ca_file, broker_file = directory / CA_FILE, directory / BROKER_PEM
    if ca_file.is_file() and broker_file.is_file():
        return ca_file
    now = datetime.now(UTC) - timedelta(minutes=5)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(_name("Tenure development CA"))
        .issuer_name(_name("Tenure development CA"))
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + timedelta(days=825))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True, key_cert_sign=True, crl_sign=True,
                content_commitment=False, key_encipherment=False, data_encipherment=False,
                key_agreement=False, encipher_only=False, decipher_only=False,
            ),
            critical=True,
        )
        .sign(ca_key, hashes.SHA256())
    )
    broker_key = ec.generate_private_key(ec.SECP256R1())
    sans: list[x509.GeneralName] = []
    for host in hosts:
        try:
            sans.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            sans.append(x509.DNSName(host))
    broker_cert = (
        x509.CertificateBuilder()
        .subject_name(_name("tenure-kafka-broker"))
        .issuer_name(ca_cert.subject)
        .public_key(broker_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + timedelta(days=397))
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    pem = serialization.Encoding.PEM
    # The broker's key store: an unencrypted PKCS#8 key followed by its chain. The file is
    # readable by its owner only; production keeps keys in the bank's secret store.
    broker_file.write_bytes(
        broker_key.private_bytes(
            pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        + broker_cert.public_bytes(pem)
        + ca_cert.public_bytes(pem)
    )
    broker_file.chmod(0o600)
    key_file = directory / CA_KEY_FILE
    key_file.write_bytes(
        ca_key.private_bytes(
            pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    key_file.chmod(0o600)
    ca_file.write_bytes(ca_cert.public_bytes(pem))
    return ca_file


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python -m tenure_cli.devtls DIR")
    sys.stdout.write(f"{ensure_dev_ca(Path(sys.argv[1]))}\n")
