"""``cloudrec serve`` with a certificate: HTTPS on the HTTP port (a self-signed certificate
made here), plain HTTP refused there, and the console's session cookie ``Secure``."""

from __future__ import annotations

import datetime
import ipaddress
import os
import ssl
import subprocess
import sys
from pathlib import Path

import httpx
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tests.service import Service


def self_signed(dest: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = dest / "cert.pem", dest / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


def test_serve_with_a_certificate_speaks_https_and_the_cookie_is_secure(tmp_path):
    cert, key = self_signed(tmp_path)
    (tmp_path / "data").mkdir()
    env = {"CLOUDREC_TLS_CERT_FILE": str(cert), "CLOUDREC_TLS_KEY_FILE": str(key)}
    svc = Service(tmp_path / "data", env=env).start()
    try:
        app = svc.create_app(1234)
        base = f"https://127.0.0.1:{svc.http_port}"
        trusted = ssl.create_default_context(cafile=str(cert))
        with httpx.Client(verify=trusted, timeout=10) as client:
            assert client.get(base + "/healthz").json()["status"] == "ok"
            r = client.get(f"{base}/v1/apps/1234/rooms", auth=("1234", app["server_secret"]))
            assert r.status_code == 200 and r.json()["rooms"] == []
            login = client.post(
                base + "/console/login",
                data={"app_id": "1234", "secret": app["server_secret"]},
            )
            assert login.status_code == 303
            cookie = login.headers["set-cookie"].lower()
            assert "secure" in cookie and "httponly" in cookie
        try:
            plain = httpx.get(f"http://127.0.0.1:{svc.http_port}/healthz", timeout=5)
            assert plain.status_code >= 400  # never an answer in clear
        except httpx.HTTPError:
            pass  # the TLS server drops a clear-text request
    finally:
        assert svc.stop() == 0


def test_a_certificate_without_its_key_is_refused_at_start(tmp_path):
    cert, _ = self_signed(tmp_path)
    out = subprocess.run(
        [sys.executable, "-m", "cloudrec.cli", "serve", "--data-dir", str(tmp_path / "d")],
        capture_output=True,
        text=True,
        timeout=60,
        env={
            **{k: v for k, v in os.environ.items() if not k.startswith("CLOUDREC_")},
            "CLOUDREC_TLS_CERT_FILE": str(cert),
        },
    )
    assert out.returncode == 2
    assert "tls_cert_file and tls_key_file: give both" in out.stderr


def test_a_certificate_that_does_not_load_is_refused_at_start(tmp_path):
    cert, _ = self_signed(tmp_path)
    (tmp_path / "other").mkdir()
    _, other_key = self_signed(tmp_path / "other")
    out = subprocess.run(
        [sys.executable, "-m", "cloudrec.cli", "serve", "--data-dir", str(tmp_path / "d")],
        capture_output=True,
        text=True,
        timeout=60,
        env={
            **{k: v for k, v in os.environ.items() if not k.startswith("CLOUDREC_")},
            "CLOUDREC_TLS_CERT_FILE": str(cert),
            "CLOUDREC_TLS_KEY_FILE": str(other_key),  # another certificate's key
        },
    )
    assert out.returncode == 1, out.stderr
    assert "cloudrec serve:" in out.stderr and "KEY_VALUES_MISMATCH" in out.stderr.upper()
