"""Checks of the adapters' own options, made when a Worker or Client is built.

The core checks everything it is handed (``WorkerConfig``, ``ClientConfig``, ``ServerURL``);
what only an adapter sees, such as the ``ssl_context``, is checked here.
"""

from __future__ import annotations

import ssl

from faktory_core import ArgumentTypeError, ConfigurationError, ServerURL

__all__ = ["check_callable", "check_flag", "check_ssl_context"]


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
