"""How a client's waits use callbacks: the URL Kie calls back, the policy that polls beside it,
and where the receiver's callbacks go.

The client checks its callback options here once; each wait then asks :meth:`CallbackPlan.plan`
for its policy and URL, so the rest of the client never looks at callbacks again.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from . import _validate as check
from ._callback_server import CallbackServer, with_token
from ._callbacks import CallbackReceiver
from ._config import PollPolicy
from ._coordination import Coordinator
from ._errors import ConfigurationError
from ._models import CallbackEvent

__all__ = ["CallbackPlan"]

log = logging.getLogger("veo4k")


class CallbackPlan:
    """A client's callback options, checked: ``callbacks`` is a started :class:`CallbackServer`,
    or an app's own :class:`CallbackReceiver` with the public ``callback_url`` of its route."""

    def __init__(
        self,
        callbacks: CallbackServer | CallbackReceiver | None,
        *,
        callback_url: str | None,
        trust: bool,
        safety_net: PollPolicy | None,
        poll_policy: PollPolicy,
    ) -> None:
        if callbacks is not None and not isinstance(callbacks, CallbackServer | CallbackReceiver):
            raise ConfigurationError("callbacks must be a veo4k.CallbackServer or CallbackReceiver")
        url = check.callback_url(callback_url)
        if isinstance(callbacks, CallbackReceiver):
            if url is None:
                raise ConfigurationError("callbacks=CallbackReceiver(...) needs callback_url=...")
            with_token(url, callbacks.token)  # a foreign token= fails here
        if safety_net is not None and not isinstance(safety_net, PollPolicy):
            raise ConfigurationError("callback_poll_policy must be a veo4k.PollPolicy")
        self.callbacks = callbacks
        self.receiver = callbacks.receiver if isinstance(callbacks, CallbackServer) else callbacks
        self.trust = bool(trust)
        self._url = url
        self._safety_net = safety_net  # None: the client's poll_policy.safety_net()
        self._poll_policy = poll_policy
        if self.trust and self.receiver is not None and not self.receiver.signed:
            log.warning(
                "trust_callback_urls=True with an unsigned receiver: anyone who learns the "
                "callback URL can end waits with URLs of their choosing"
            )

    @property
    def recent(self) -> Callable[[str], CallbackEvent | None] | None:
        """The receiver's callbacks that came before anyone waited, by task. None when it
        publishes to a shared coordinator: the claim hands over the one kept for the index
        (the receiver's own memory knows tasks, not indexes)."""
        if self.receiver is None or self.receiver.coordinator is not None:
            return None
        return self.receiver.recent

    def plan(
        self, poll_policy: PollPolicy | None, callback_url: str | None
    ) -> tuple[PollPolicy, str | None, PollPolicy]:
        """The policy and callback URL of a wait: with callbacks, the receiver's URL and the
        client's policy as a sparse safety net (same timeout), unless the caller chose; and the
        policy its upscale's duration is estimated from (never the safety net)."""
        if poll_policy is not None and not isinstance(poll_policy, PollPolicy):
            raise ConfigurationError("poll_policy must be a veo4k.PollPolicy")
        basis = poll_policy or self._poll_policy
        if self.callbacks is None or callback_url is not None:
            return basis, callback_url, basis
        net = self._safety_net or self._poll_policy.safety_net()
        return poll_policy or net, self._default_url(), basis

    def _default_url(self) -> str:
        if self._url is not None and self.receiver is not None:
            return with_token(self._url, self.receiver.token)
        assert isinstance(self.callbacks, CallbackServer)
        return self.callbacks.url

    def attach(self, on_callback: Callable[[CallbackEvent], None], via: Coordinator) -> None:
        """Deliver the receiver's callbacks to ``on_callback``, unless the receiver publishes to
        ``via`` (the client's coordinator already delivers those)."""
        if self.receiver is not None and self.receiver.coordinator is not via:
            self.receiver.add_handler(on_callback)

    def detach(self, on_callback: Callable[[CallbackEvent], None]) -> None:
        """Stop delivering to ``on_callback`` (no-op if it was never attached)."""
        if self.receiver is not None:
            self.receiver.remove_handler(on_callback)
