"""The boundary to the Hetzner Cloud API: one hcloud client per thread, bounded retries, and
the one place where ``hcloud.APIException`` and ``requests`` errors become Morpheus errors.

Errors keep the API's ``code`` (``uniqueness_error``, ``resource_unavailable``, ``locked``...)
so callers branch on codes, never on message text::

    MorpheusError
    └── ProviderError
        └── HetznerError                an API call failed; ``.code`` is the API's code
            ├── HetznerPreflightError   ... during the checks before anything is created
            └── LostResponseError       a POST got no answer: it may or may not have happened

Retry policy (``call``, run by tenacity): 429 waits until ``RateLimit-Reset`` (when that is
not too far off); 5xx-like codes and unanswered idempotent requests back off exponentially
with full jitter; callers may add codes (``locked`` for deletes).  A POST that creates
something is never re-sent blindly: ``create`` first asks whether the lost one happened.
Every loop is bounded by ``max_retries``.  hcloud's own retries are switched off, because
they neither honour ``RateLimit-Reset`` nor know that re-sending a POST can create a second
server.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from typing import Any, TypeVar

import hcloud
import requests
import tenacity
from pydantic import SecretStr

from morpheus.errors import PreflightError, ProviderError
from morpheus_hetzner.clients import Clients, set_timeout
from morpheus_hetzner.limits import RateBudget, ReadBound
from morpheus_hetzner.settings import HetznerSettings

T = TypeVar("T")

#: Codes after which the same request may simply be sent again.
TRANSIENT_CODES = frozenset(
    {
        "server_error",
        "service_error",
        "unavailable",
        "maintenance",
        "timeout",
        "bad_gateway",
        "gateway_timeout",
        "conflict",
    }
)
RATE_LIMITED = "rate_limit_exceeded"
NO_AUTH_MESSAGE = (
    "no Hetzner API token: set HCLOUD_TOKEN (or HETZNER_API_TOKEN), or "
    "providers.hetzner.token in config.yaml, to a Read & Write token from the Hetzner Cloud "
    "console (project -> Security -> API tokens)"
)


class HetznerError(ProviderError):
    """A Hetzner Cloud API call failed; ``code`` is the API's error code, when it gave one."""


class HetznerPreflightError(HetznerError, PreflightError):
    """A check before anything is created failed; nothing was created."""


class LostResponseError(HetznerError):
    """A request that creates something got no answer: it may or may not have been done."""


def api_code(exc: hcloud.APIException) -> str:
    """The error code as text: the API's code, or the HTTP status of a non-JSON answer."""
    return exc.code if isinstance(exc.code, str) else f"http_{exc.code}"


def is_transient(code: str) -> bool:
    if code in TRANSIENT_CODES:
        return True
    return code.startswith("http_5")


class HetznerApi:
    """Builds hcloud clients (one per thread) and runs calls through the retry policy."""

    def __init__(
        self,
        token: SecretStr | None,
        endpoint: str,
        config: HetznerSettings,
        *,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.endpoint = endpoint
        self.config = config
        self._token = token
        self._sleep = sleep
        self._local = threading.local()
        self._clients = Clients(
            endpoint, timeout=config.request_timeout, on_response=self._remember_rate_limit
        )
        self.budget = RateBudget()
        self.reads = ReadBound()

    @property
    def has_token(self) -> bool:
        return self._token is not None

    def client(self) -> hcloud.Client:
        """This thread's client."""
        if self._token is None:
            raise HetznerError(NO_AUTH_MESSAGE, code="no_token")
        return self._clients.get(self._token)

    def close(self) -> None:
        """Close every thread's HTTP session."""
        self._clients.close()

    def _remember_rate_limit(self, response: requests.Response, *args: Any, **kwargs: Any) -> None:
        self._local.rate_limit_reset = response.headers.get("RateLimit-Reset")
        self.budget.observe(response.headers)

    def call(
        self,
        doing: str,
        operation: Callable[[hcloud.Client], T],
        *,
        retry_codes: Iterable[str] = (),
        idempotent: bool = True,
    ) -> T:
        """``operation(client)`` under the retry policy; failures become ``HetznerError``.

        ``doing`` completes "Hetzner API: ... failed" in messages.  A non-idempotent call
        (a POST that creates something) is not re-sent after a lost answer: it raises
        ``LostResponseError`` and the caller decides (usually ``create``).
        """
        extra = frozenset(retry_codes)

        def attempt() -> T:
            self._pace(doing)
            client = self.client()
            set_timeout(client, self._attempt_timeout(doing))
            try:
                return operation(client)
            except hcloud.APIException as exc:
                raise self._classify(exc, doing, extra) from exc
            except requests.RequestException as exc:
                if not idempotent:
                    raise LostResponseError(
                        f"no answer from the Hetzner API at {self.endpoint} while {doing} "
                        f"({type(exc).__name__})",
                        code="lost_response",
                    ) from exc
                raise _Retry(
                    HetznerError(
                        f"cannot reach the Hetzner API at {self.endpoint} while {doing} "
                        f"after {self.config.max_retries + 1} attempts ({type(exc).__name__}); "
                        "check the network and HCLOUD_ENDPOINT / providers.hetzner.endpoint",
                        code="unreachable",
                    )
                ) from exc

        retrying = tenacity.Retrying(
            retry=tenacity.retry_if_exception_type(_Retry),
            wait=self._wait_for,
            stop=self._stop,
            sleep=self._nap,
            reraise=True,
        )
        try:
            return retrying(attempt)
        except _Retry as exhausted:
            raise exhausted.error from exhausted.__cause__

    def create(
        self,
        doing: str,
        create: Callable[[hcloud.Client], T],
        find: Callable[[], T | None] | None = None,
    ) -> T:
        """Send a request that creates something; a lost answer is followed by ``find``
        (did the first one happen?) and, when it finds nothing, by the same request again,
        at most ``max_retries`` times.  Without ``find`` the request is simply sent again:
        the caller must recognise its own resource in the ``uniqueness_error`` that follows.
        """

        def attempt() -> T:
            try:
                return self.call(doing, create, retry_codes={"locked"}, idempotent=False)
            except LostResponseError:
                found = find() if find is not None else None
                if found is not None:
                    return found
                raise

        retrying = self._retrying(
            retry=tenacity.retry_if_exception_type(LostResponseError), wait=self._backoff
        )
        return retrying(attempt)

    def create_or_adopt(
        self,
        doing: str,
        create: Callable[[hcloud.Client], T],
        find: Callable[[], T | None],
    ) -> T:
        """Create a named resource; after a lost answer or ``uniqueness_error`` take the one
        that exists when it is ours (``find`` checks the labels)."""
        try:
            return self.create(doing, create, find)
        except HetznerError as exc:
            if exc.code != "uniqueness_error":
                raise
            found = find()
            if found is None:
                raise HetznerError(
                    f"{doing}: the name is taken by something Morpheus did not make for "
                    "this forest; rename or delete it in the Hetzner console",
                    code="uniqueness_error",
                ) from exc
            return found

    def _retrying(
        self,
        *,
        retry: tenacity.retry_base,
        wait: Callable[[tenacity.RetryCallState], float],
    ) -> tenacity.Retrying:
        return tenacity.Retrying(
            retry=retry,
            wait=wait,
            stop=tenacity.stop_after_attempt(self.config.max_retries + 1),
            sleep=self._nap,
            reraise=True,
        )

    def _backoff(self, state: tenacity.RetryCallState) -> float:
        """Exponential backoff with full jitter: a random wait up to base * 2**retry."""
        return tenacity.wait_random_exponential(
            multiplier=self.config.retry_base_delay,
            min=self.config.retry_base_delay / 2,
            max=self.config.retry_max_delay,
        )(state)

    def _pace(self, doing: str) -> None:
        """Wait for a token of the project's request budget, when that fits."""
        wait = self.budget.take()
        if wait > self.config.max_rate_limit_wait:
            self.budget.give_back()
            raise HetznerError(
                f"Hetzner API rate limit: {doing} would have to wait {wait:.0f} s for the "
                f"project's request budget ({self.budget.limit} requests per hour, refilled "
                f"at {self.budget.rate * 60:.0f} per minute), more than "
                f"providers.hetzner.max_rate_limit_wait ({self.config.max_rate_limit_wait:g} s); "
                "run the command again later or raise max_rate_limit_wait",
                code=RATE_LIMITED,
            )
        self._nap(wait)

    def _nap(self, seconds: float) -> None:
        left = self.reads.remaining()
        seconds = seconds if left is None else min(seconds, left)
        if seconds > 0:
            self._sleep(seconds)

    def _attempt_timeout(self, doing: str) -> float:
        """``request_timeout``, or less when a read-only look has less time left."""
        left = self.reads.remaining()
        if left is None:
            return self.config.request_timeout
        if left <= 0:
            raise HetznerError(
                f"no answer from the Hetzner API at {self.endpoint} within "
                f"{self.config.read_timeout:g} s while {doing} (providers.hetzner.read_timeout)",
                code="timeout",
            )
        return min(self.config.request_timeout, left)

    def _stop(self, state: tenacity.RetryCallState) -> bool:
        """``max_retries`` attempts, but a 429 is asked again for as long as the wait for
        the request budget fits ``max_rate_limit_wait`` (the pacing does the waiting)."""
        failure = state.outcome.exception() if state.outcome is not None else None
        if isinstance(failure, _Retry) and failure.rate_limited:
            return state.idle_for > self.config.max_rate_limit_wait
        return state.attempt_number >= self.config.max_retries + 1

    def _wait_for(self, state: tenacity.RetryCallState) -> float:
        """RateLimit-Reset when the 429 said when (``_Retry.after``), else the backoff."""
        failure = state.outcome.exception() if state.outcome is not None else None
        if isinstance(failure, _Retry) and failure.after is not None:
            return failure.after
        return self._backoff(state)

    def _classify(self, exc: hcloud.APIException, doing: str, extra: frozenset[str]) -> Exception:
        """The error to raise for an API error: ``_Retry`` when asking again may help."""
        code = api_code(exc)
        error = self.translate(exc, doing)
        if code == RATE_LIMITED and self.budget.limit is not None:
            # The answer said how many tokens are left (none): _pace waits for one.
            return _Retry(error, after=0.0, rate_limited=True)
        if code == RATE_LIMITED:  # an API that gives no budget: RateLimit-Reset, or backoff
            wait = self._until_reset()
            if wait is None:
                return _Retry(error)
            if wait > self.config.max_rate_limit_wait:
                return error
            # A little jitter so parallel workers do not all return in the same instant.
            return _Retry(
                error, after=wait + random.uniform(0, min(1.0, self.config.retry_base_delay))
            )
        if is_transient(code) or code in extra:
            return _Retry(error)
        return error

    def _until_reset(self) -> float | None:
        raw = getattr(self._local, "rate_limit_reset", None)
        try:
            reset = float(raw) if raw is not None else None
        except ValueError:
            return None
        return None if reset is None else max(0.0, reset - time.time())

    def translate(self, exc: hcloud.APIException, doing: str) -> HetznerError:
        """The Morpheus error for an API error, with a message that says what to do."""
        code = api_code(exc)
        message = str(exc.message)
        if self._token is not None:
            message = message.replace(self._token.get_secret_value(), "***")
        if code == "unauthorized":
            return HetznerError(
                "the Hetzner API refused the token (unauthorized): create a Read & Write API "
                "token in the Hetzner Cloud console (project -> Security -> API tokens) and set "
                "HCLOUD_TOKEN or providers.hetzner.token",
                code=code,
            )
        if code in ("forbidden", "token_readonly"):
            return HetznerError(
                f"the Hetzner API token may not do this ({code}) while {doing}: it is probably "
                "read-only; create a Read & Write token",
                code=code,
            )
        if code == RATE_LIMITED:
            wait = self._until_reset()
            when = ""
            if wait is not None:
                reset = datetime.fromtimestamp(time.time() + wait, UTC).strftime("%H:%M:%S UTC")
                when = f"; it resets at {reset}, in {wait:.0f} s"
            limit = self.budget.limit
            if limit is not None:
                when = (
                    f"; it allows {limit} requests per hour per project and refills "
                    f"{self.budget.rate * 60:.0f} per minute"
                )
            return HetznerError(
                f"Hetzner API rate limit reached while {doing}{when}; try again later",
                code=code,
            )
        return HetznerError(f"Hetzner API: {doing} failed: {message} ({code})", code=code)


class _Retry(Exception):
    """Asking again may help; ``error`` is what to raise when the retries are used up."""

    def __init__(
        self, error: HetznerError, after: float | None = None, *, rate_limited: bool = False
    ) -> None:
        super().__init__(str(error))
        self.error = error
        self.after = after
        self.rate_limited = rate_limited


def preflight_error(error: HetznerError) -> HetznerPreflightError:
    """The same failure, reported as a pre-flight failure (nothing was created)."""
    return HetznerPreflightError(str(error), code=error.code)
