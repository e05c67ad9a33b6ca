"""A throw-away certificate authority and server certificate, made with the ``openssl`` CLI.

::

    certs = make_certificates(tmp_path)  # a CA, and a server cert for localhost and 127.0.0.1
    FaktoryServer(tls=(certs.server_key, certs.server_cert))
    ssl.create_default_context(cafile=certs.ca_cert)  # trusts that server

Standard library only.
"""

from __future__ import annotations

import ipaddress
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

__all__ = ["Certificates", "make_certificates"]

_DAYS = "2"  # long enough for any test run; an expired leftover is useless to anyone
_TIMEOUT = 60.0


@dataclass(frozen=True)
class Certificates:
    """PEM files: a self-signed CA, and a server key and certificate it signed."""

    ca_cert: Path
    ca_key: Path
    server_key: Path
    server_cert: Path


def make_certificates(
    directory: Path, names: Sequence[str] = ("localhost", "127.0.0.1")
) -> Certificates:
    """Make a new CA and a server certificate valid for ``names`` (host names or IPs).

    The files go into ``directory`` (created if missing). Raises RuntimeError, with
    openssl's output, if a step fails.
    """
    directory.mkdir(parents=True, exist_ok=True)
    certs = Certificates(
        ca_cert=directory / "ca.cert.pem",
        ca_key=directory / "ca.key.pem",
        server_key=directory / "private.key.pem",
        server_cert=directory / "public.cert.pem",
    )
    request = directory / "server.csr.pem"
    extensions = directory / "server.ext"
    extensions.write_text(
        "basicConstraints = critical, CA:FALSE\n"
        "keyUsage = critical, digitalSignature, keyEncipherment\n"
        "extendedKeyUsage = serverAuth\n"
        f"subjectAltName = {', '.join(_alt_name(name) for name in names)}\n",
        encoding="ascii",
    )
    _openssl(
        "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
        "-nodes", "-days", _DAYS, "-subj", f"/CN=faktory-sansio test CA {directory.name}",
        "-addext", "basicConstraints=critical,CA:TRUE",
        "-addext", "keyUsage=critical,keyCertSign,cRLSign",
        "-keyout", str(certs.ca_key), "-out", str(certs.ca_cert),
    )  # fmt: skip
    _openssl(
        "req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
        "-nodes", "-subj", f"/CN={names[0]}",
        "-keyout", str(certs.server_key), "-out", str(request),
    )  # fmt: skip
    _openssl(
        "x509", "-req", "-in", str(request), "-CA", str(certs.ca_cert),
        "-CAkey", str(certs.ca_key), "-CAcreateserial", "-days", _DAYS,
        "-extfile", str(extensions), "-out", str(certs.server_cert),
    )  # fmt: skip
    return certs


def _alt_name(name: str) -> str:
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return f"DNS:{name}"
    return f"IP:{name}"


def _openssl(*args: str) -> None:
    try:
        result = subprocess.run(
            ["openssl", *args],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=_TIMEOUT,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as error:
        raise RuntimeError(f"openssl {args[0]} could not run: {error}") from error
    if result.returncode != 0:
        raise RuntimeError(
            f"openssl {' '.join(args)} failed (exit status {result.returncode}):\n"
            f"{result.stderr.strip()}"
        )
