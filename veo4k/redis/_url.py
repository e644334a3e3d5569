"""Redis URLs: the client a URL names, and the URL with every credential hidden.

Credentials hide in three places: the userinfo (``redis://user:pw@host``, also for
``unix://:pw@/path``), query values (``?password=...``), and redis-py's own error texts about
the URL. None of them reaches a repr, a log line or an exception.
"""

from __future__ import annotations

from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster

from .._errors import ConfigurationError

__all__ = ["connect", "redact", "url_secrets"]

_CLUSTER_SCHEMES = {"redis+cluster": "redis", "rediss+cluster": "rediss"}
_SECRET_PARAMS = {"password", "pass", "pwd", "auth", "token", "secret", "username", "user"}


def redact(url: str) -> str:
    """``url`` without credentials: userinfo and secret query values become ``***``."""
    parts = urlsplit(url)
    netloc = parts.netloc
    if "@" in netloc:
        netloc = "***@" + netloc.rpartition("@")[2]
    query = parse_qsl(parts.query, keep_blank_values=True)
    hidden = [(k, "***" if k.lower() in _SECRET_PARAMS else v) for k, v in query]
    return urlunsplit(parts._replace(netloc=netloc, query=urlencode(hidden, safe="*")))


def url_secrets(url: str) -> list[str]:
    """Every credential in ``url`` (to scrub from error texts), longest first."""
    parts = urlsplit(url)
    found = [parts.username, parts.password]
    found += [v for k, v in parse_qsl(parts.query) if k.lower() in _SECRET_PARAMS]
    return sorted({s for s in found if s}, key=len, reverse=True)


def connect(url: str, timeout: float) -> tuple[Redis | RedisCluster, str, tuple[str, ...]]:
    """The client for ``redis://``, ``rediss://``, ``unix://`` or ``redis+cluster://``
    (``rediss+cluster://``), with its redacted URL and the credentials to scrub."""
    scheme, sep, rest = url.partition("://")
    try:
        hidden = tuple(url_secrets(url))
        where = redact(url)
    except ValueError:
        raise ConfigurationError("not a valid Redis URL") from None
    try:
        if scheme in _CLUSTER_SCHEMES:
            client: Redis | RedisCluster = RedisCluster.from_url(
                _CLUSTER_SCHEMES[scheme] + sep + rest,
                socket_timeout=timeout,
                socket_connect_timeout=timeout,
            )
        else:
            client = Redis.from_url(url, socket_timeout=timeout, socket_connect_timeout=timeout)
    except (ValueError, TypeError) as exc:  # redis-py's own check: keep the URL out of it
        text = str(exc)
        for secret in hidden:
            text = text.replace(secret, "***")
        raise ConfigurationError(f"not a valid Redis URL: {text}") from None
    return client, where, hidden
