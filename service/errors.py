"""Domain errors. The HTTP layer maps each to its status code and a stable JSON body."""

from __future__ import annotations

from collections.abc import Sequence


def shown(value: object, limit: int = 80) -> str:
    """``repr(value)`` for an error message, cut to ``limit`` characters: a message never echoes a
    megabyte of the client's input back."""
    text = repr(value)
    return text if len(text) <= limit else f"{text[: limit - 3]}..."


# Most names one error message lists; the rest are counted ("(and 9990 more)"), so a request naming
# 10,000 unknown prefixes, or a bank of 2,000, never makes a message of many kilobytes.
MAX_LISTED = 10


def shown_list(values: Sequence[str], most: int = MAX_LISTED, *, quoted: bool = True) -> str:
    """At most ``most`` values, each :func:`shown` (or as is, ``quoted=False``), and how many were
    left out."""
    head = ", ".join(shown(v) if quoted else str(v)[:80] for v in values[:most])
    return head + (f" (and {len(values) - most} more)" if len(values) > most else "")


class PrefixEmbedError(Exception):
    """Base of every error whose message is safe to show to a client."""

    status_code = 400
    type = "invalid_request_error"
    code = "invalid_request"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    @property
    def headers(self) -> dict[str, str]:
        """Extra HTTP response headers for this error (e.g. ``Retry-After``)."""
        return {}


class InvalidInput(PrefixEmbedError):
    code = "invalid_input"


class InputTooLong(PrefixEmbedError):
    status_code = 413
    code = "input_too_long"


class TooManyInputs(PrefixEmbedError):
    status_code = 413
    code = "too_many_inputs"


class PrefixNotFound(PrefixEmbedError):
    status_code = 404
    type = "not_found_error"
    code = "prefix_not_found"


class PrefixSetNotFound(PrefixEmbedError):
    status_code = 404
    type = "not_found_error"
    code = "prefix_set_not_found"


class PrefixDisabled(PrefixEmbedError):
    status_code = 409
    code = "prefix_disabled"


class NoActivePrefixes(PrefixEmbedError):
    status_code = 409
    code = "no_active_prefixes"


class ModelUnavailable(PrefixEmbedError):
    """A served model (a fixed prefix set of models.json) has a member missing, disabled or at
    another version than it pins: its vectors would not mean what they meant."""

    status_code = 409
    code = "model_unavailable"


class PrefixConflict(PrefixEmbedError):
    status_code = 409
    code = "prefix_conflict"


class InvalidPrefixFile(PrefixEmbedError):
    """A prefix file that cannot be served; the message names the file and the reason."""

    status_code = 422
    code = "invalid_prefix_file"


class InvalidHeadFile(InvalidPrefixFile):
    """A head file that cannot be served (``heads/NAME.safetensors``); the message names it and why."""

    code = "invalid_head_file"


class HeadNotFound(PrefixEmbedError):
    status_code = 404
    type = "not_found_error"
    code = "head_not_found"


class HeadDisabled(PrefixEmbedError):
    status_code = 409
    code = "head_disabled"


class HeadUnavailable(PrefixEmbedError):
    """A head whose input prefix is missing, disabled or has another digest than the head records."""

    status_code = 409
    code = "head_unavailable"


class NoAvailableHeads(PrefixEmbedError):
    status_code = 409
    code = "no_available_heads"


class PrefixPending(InvalidPrefixFile):
    """A prefix file that may still be being written (it changed while read, or is not settled yet):
    the registry looks at it again when its settle window ends instead of rejecting it for good."""

    code = "prefix_pending"


class ModelLoadError(PrefixEmbedError):
    status_code = 500
    type = "server_error"
    code = "model_load_error"


class Unauthorized(PrefixEmbedError):
    status_code = 401
    type = "authentication_error"
    code = "invalid_api_key"


class PrefixStoreUnwritable(PrefixEmbedError):
    """The prefix folder cannot be written (read-only mount, permissions): nothing was changed."""

    status_code = 503
    type = "unavailable_error"
    code = "prefix_store_unwritable"


class Forbidden(PrefixEmbedError):
    status_code = 403
    type = "permission_error"
    code = "admin_key_required"


class QueueFull(PrefixEmbedError):
    """The batcher's queue is full. ``retry_after``: whole seconds until it has likely drained."""

    status_code = 429
    type = "overloaded_error"
    code = "queue_full"

    def __init__(self, message: str, retry_after: int = 1) -> None:
        super().__init__(message)
        self.retry_after = max(1, int(retry_after))

    @property
    def headers(self) -> dict[str, str]:
        return {"Retry-After": str(self.retry_after)}


class DeadlineExceeded(PrefixEmbedError):
    status_code = 504
    type = "timeout_error"
    code = "deadline_exceeded"


class InferenceFailed(PrefixEmbedError):
    """The forward batch holding this request raised; details are in the server log only."""

    status_code = 500
    type = "server_error"
    code = "inference_failed"


class NotReady(PrefixEmbedError):
    status_code = 503
    type = "unavailable_error"
    code = "not_ready"


class InvalidExamples(PrefixEmbedError):
    """A fit's example set that cannot make a head (one class, empty texts, too many labels, ...):
    refused before anything is embedded or written."""

    status_code = 422
    code = "invalid_examples"


class TooManyExamples(PrefixEmbedError):
    status_code = 413
    code = "too_many_examples"


class FitRunning(PrefixEmbedError):
    """A fit of this head is running (409), or the server runs as many fits as it allows (429)."""

    status_code = 409
    code = "fit_running"

    def __init__(self, message: str, status_code: int = 409) -> None:
        super().__init__(message)
        self.status_code = status_code

    @property
    def headers(self) -> dict[str, str]:
        return {"Retry-After": "5"} if self.status_code == 429 else {}


class FitJobNotFound(PrefixEmbedError):
    status_code = 404
    type = "not_found_error"
    code = "fit_job_not_found"


class FitTimedOut(PrefixEmbedError):
    """A fit ran past ``fit_timeout_s``; nothing was written."""

    status_code = 504
    type = "timeout_error"
    code = "fit_timed_out"
