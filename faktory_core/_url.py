"""Where the server is: ``tcp://`` and ``tcp+tls://`` URLs, and the environment convention."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final
from urllib.parse import unquote, urlsplit

import attrs

from ._errors import ConfigurationError

__all__ = ["DEFAULT_PORT", "DEFAULT_URL", "ServerURL"]

DEFAULT_PORT: Final = 7419
DEFAULT_URL: Final = "tcp://localhost:7419"
_SCHEMES: Final = {"tcp": False, "tcp+tls": True}


@attrs.frozen(kw_only=True)
class ServerURL:
    """A parsed server address. The password never appears in ``repr`` or ``str``."""

    host: str
    port: int = DEFAULT_PORT
    tls: bool = False
    username: str | None = None
    password: str | None = attrs.field(default=None, repr=False)

    def __attrs_post_init__(self) -> None:
        if not isinstance(self.host, str) or not self.host:
            raise ConfigurationError(f"invalid Faktory URL: no host (got {self.host!r})")
        # urllib takes port 0, which no server listens on: the worker would never connect.
        if type(self.port) is not int or not 1 <= self.port <= 65535:
            raise ConfigurationError(
                f"invalid Faktory URL {str(self)!r}: the port must be a number from 1 to 65535"
            )

    @classmethod
    def parse(cls, url: str) -> ServerURL:
        """Parse ``tcp://[user][:password]@host[:port]`` (or ``tcp+tls://``).

        The password is percent-decoded; the port defaults to 7419; path and query are ignored.
        """
        try:
            parts = urlsplit(url.strip())
            port = parts.port
        except ValueError:
            # urllib's own message quotes the URL, password included: never pass it on.
            raise ConfigurationError(
                f"invalid Faktory URL {_redact(url)!r}: the port must be a number from 1 to "
                "65535 (percent-encode any '/', '?', '#' or '@' in the password)"
            ) from None
        if parts.scheme not in _SCHEMES:
            raise ConfigurationError(
                f"invalid Faktory URL {_redact(url)!r}: the scheme must be tcp:// or tcp+tls://"
            )
        if not parts.hostname:
            raise ConfigurationError(f"invalid Faktory URL {_redact(url)!r}: no host")
        return cls(
            host=parts.hostname,
            port=DEFAULT_PORT if port is None else port,
            tls=_SCHEMES[parts.scheme],
            username=unquote(parts.username) if parts.username else None,
            password=unquote(parts.password) if parts.password else None,
        )

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> ServerURL:
        """Resolve the URL the way every Faktory client does, from a mapping such as os.environ.

        ``FAKTORY_PROVIDER`` names the variable that holds the URL; otherwise ``FAKTORY_URL``;
        otherwise ``tcp://localhost:7419``.
        """
        provider = env.get("FAKTORY_PROVIDER")
        if provider:
            if ":" in provider:
                raise ConfigurationError(
                    "FAKTORY_PROVIDER must name the variable that holds the URL, not the URL"
                )
            if provider not in env:
                raise ConfigurationError(
                    f"FAKTORY_PROVIDER names {provider}, which is not set in the environment"
                )
            return cls._parse_from(provider, env[provider])
        url = env.get("FAKTORY_URL")
        return cls._parse_from("FAKTORY_URL", url) if url else cls.parse(DEFAULT_URL)

    @classmethod
    def _parse_from(cls, variable: str, url: str) -> ServerURL:
        """Parse ``url``, found in the environment variable ``variable``, naming it if bad."""
        try:
            return cls.parse(url)
        except ConfigurationError as error:
            raise ConfigurationError(f"the environment variable {variable}: {error}") from None

    def __str__(self) -> str:
        scheme = "tcp+tls" if self.tls else "tcp"
        user = self.username or ""
        auth = f"{user}:***@" if self.password else (f"{user}@" if user else "")
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{scheme}://{auth}{host}:{self.port}"


def _redact(url: str) -> str:
    """The URL with any password replaced, for error messages."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        return "***" if "@" in url else url
    userinfo, at, hostpart = rest.rpartition("@")
    if not at:
        return url
    user = userinfo.partition(":")[0]
    return f"{scheme}://{user}:***@{hostpart}"
