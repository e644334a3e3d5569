"""Where a coordinator's data lives in Redis: one namespace, one Kie account.

Every key of a namespace carries the hash tag ``{namespace}`` (one Redis Cluster slot, so
every script's keys are on one node). What belongs to an account (the rate budget, kept
results, task leases) also carries a salted fingerprint of the API key, never the key: two keys
in one namespace share none of it, so key B never gets key A's URLs without asking Kie.
Callbacks are the namespace's (a receiver authenticates them by its token or HMAC key, and
needs no API key): they only ever end the waits of the task they name.
"""

from __future__ import annotations

import os
from collections.abc import Callable

from .._errors import ConfigurationError
from .._secret import ApiKey

__all__ = ["Scope"]

_NAMESPACE_PURPOSE = "veo4k redis namespace v1"
_ACCOUNT_PURPOSE = "veo4k redis account v1"


def _checked(value: object) -> str:
    if not isinstance(value, str) or not value or len(value) > 100 or any(c in value for c in "{}"):
        raise ConfigurationError("namespace must be 1-100 characters without '{' or '}'")
    return value


class Scope:
    """The namespace (given, or derived from the first client's key) and the account."""

    def __init__(self, namespace: str | None) -> None:
        self._namespace = None if namespace is None else _checked(namespace)
        self._account: str | None = None

    def bind(self, key: ApiKey) -> None:
        """A client with ``key`` uses this coordinator: its account (and default namespace)."""
        account = "a" + key.fingerprint(_ACCOUNT_PURPOSE)
        if self._account is not None and account != self._account:
            raise ConfigurationError(
                "this RedisCoordinator already serves another Kie API key: give each key its "
                "own coordinator (results and budgets are kept per key)"
            )
        if self._namespace is None:
            self._namespace = "k" + key.fingerprint(_NAMESPACE_PURPOSE)
        self._account = account

    @property
    def bound(self) -> bool:
        """True once a key is known (a client's, or ``KIE_API_KEY``)."""
        return self._account is not None

    def _from_environment(self) -> None:
        text = os.environ.get("KIE_API_KEY", "").strip()
        if text and self._account is None:
            self.bind(ApiKey.load(text))

    @property
    def namespace(self) -> str:
        """The namespace; without one given, derived from the key of the first client."""
        return self._known(lambda: self._namespace, "no namespace yet: pass namespace=..., or")

    @property
    def described(self) -> str:
        """The namespace for a repr (without deriving it)."""
        return repr(self._namespace) if self._namespace else "<from the client's key>"

    @property
    def account(self) -> str:
        """The salted fingerprint of the key whose results and budget this is."""
        return self._known(lambda: self._account, "no Kie API key yet:")

    def _known(self, value: Callable[[], str | None], missing: str) -> str:
        if value() is None:
            self._from_environment()
        found = value()
        if found is None:
            raise ConfigurationError(
                f"RedisCoordinator has {missing} use it through a Veo4kClient first (the "
                "default namespace derives from the client's API key), or set KIE_API_KEY"
            )
        return found

    def key(self, *parts: object) -> str:
        """A key of the namespace (callbacks, the channel)."""
        return ":".join(["veo4k", "{" + self.namespace + "}", *map(str, parts)])

    def account_key(self, *parts: object) -> str:
        """A key of the namespace and the account (budget, results, leases)."""
        return self.key(self.account, *parts)
