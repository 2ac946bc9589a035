"""A throwaway PKI made with the openssl CLI: a CA, a server and a client certificate.

TLS tests need real certificates; `make_pki(dir, server_names)` writes a CA, a server
certificate for those DNS names (and 127.0.0.1), and a client certificate the same CA
signs, all EC P-256 and valid for a day. Calling it again in another directory makes an
unrelated CA: a "rogue" one whose certificates the first must refuse.
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Pki:
    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path

    def read(self, name: str) -> bytes:
        path: Path = getattr(self, name)
        return path.read_bytes()


def _openssl(*args: str) -> None:
    subprocess.run(["openssl", *args], check=True, capture_output=True, timeout=60)


def _key(path: Path) -> None:
    _openssl("genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256",
             "-out", str(path))


def _signed(d: Path, name: str, subject: str, ext: str, ca: Path, ca_key: Path) -> None:
    _key(d / f"{name}.key")
    _openssl("req", "-new", "-key", str(d / f"{name}.key"), "-subj", subject,
             "-out", str(d / f"{name}.csr"))
    (d / f"{name}.ext").write_text(ext)
    _openssl("x509", "-req", "-in", str(d / f"{name}.csr"), "-CA", str(ca), "-CAkey",
             str(ca_key), "-CAcreateserial", "-days", "1", "-sha256", "-extfile",
             str(d / f"{name}.ext"), "-out", str(d / f"{name}.crt"))


def make_pki(d: Path, server_names: list[str]) -> Pki:
    d.mkdir(parents=True, exist_ok=True)
    _key(d / "ca.key")
    _openssl("req", "-x509", "-new", "-key", str(d / "ca.key"), "-subj", "/CN=spyglass test CA",
             "-days", "1", "-sha256", "-out", str(d / "ca.crt"))
    sans = ",".join([*(f"DNS:{n}" for n in server_names), "IP:127.0.0.1"])
    _signed(d, "server", "/CN=" + server_names[0],
            f"subjectAltName={sans}\nextendedKeyUsage=serverAuth\n", d / "ca.crt", d / "ca.key")
    _signed(d, "client", "/CN=spyglass test client", "extendedKeyUsage=clientAuth\n",
            d / "ca.crt", d / "ca.key")
    return Pki(ca=d / "ca.crt", server_cert=d / "server.crt", server_key=d / "server.key",
               client_cert=d / "client.crt", client_key=d / "client.key")
