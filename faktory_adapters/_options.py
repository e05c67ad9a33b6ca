"""Checks of the adapters' own options, made when a Worker or Client is built.

The core checks everything it is handed (``WorkerConfig``, ``ClientConfig``, ``ServerURL``);
what only an adapter sees, such as the ``ssl_context``, is checked here.
"""

from __future__ import annotations

import importlib.util
import ssl

from faktory_core import ArgumentTypeError, ConfigurationError, OptionError, ServerURL

__all__ = [
    "check_callable",
    "check_flag",
    "check_metrics_options",
    "check_port",
    "check_ssl_context",
]


def check_ssl_context(url: ServerURL, ssl_context: object) -> None:
    """Refuse an ``ssl_context`` that is not one, or that a plain ``tcp://`` URL would ignore.

    Ignoring it would send the password proof and every job in plaintext to whoever answers,
    while the code reads as though the traffic were encrypted.
    """
    if ssl_context is None:
        return
    if not isinstance(ssl_context, ssl.SSLContext):
        raise ConfigurationError(
            f"ssl_context must be an ssl.SSLContext, got {type(ssl_context).__name__}"
        )
    if not url.tls:
        raise ConfigurationError(
            f"ssl_context was given but {url} is plain TCP: use a tcp+tls:// URL"
        )


def check_flag(name: str, value: object) -> None:
    """Refuse anything but True or False (a string such as "false" would read as true)."""
    if not isinstance(value, bool):
        raise ConfigurationError(f"{name} must be True or False, got {value!r}")


def check_callable(name: str, value: object, what: str) -> None:
    """Refuse a ``value`` that cannot be called; ``what`` says what it should be."""
    if not callable(value):
        raise ArgumentTypeError(f"{name} must be {what}, got {type(value).__name__}")


def check_metrics_options(port: object, address: object) -> None:
    """Refuse a ``metrics_port`` that is not a TCP port (or None), an ``address`` that is not
    a host string, and a port without prometheus_client to serve it."""
    if not isinstance(address, str) or not address:
        raise ArgumentTypeError(
            f"metrics_address must be a host name or IP address string, got {address!r}"
        )
    if port is None:
        return
    check_port("metrics_port", port, "an int or None")
    if importlib.util.find_spec("prometheus_client") is None:
        raise ConfigurationError(
            "metrics_port needs prometheus_client: pip install 'faktory-sansio[prometheus]'"
        )


def check_port(name: str, port: object, what: str = "an int") -> None:
    """Refuse a ``port`` that is not a TCP port number (0: any free port); ``what`` says what
    it should be."""
    if not isinstance(port, int) or isinstance(port, bool):
        raise ArgumentTypeError(f"{name} must be {what}, got {port!r}")
    if not 0 <= port <= 65535:
        raise OptionError(f"{name} must be 0 (any free port) to 65535, got {port}")
