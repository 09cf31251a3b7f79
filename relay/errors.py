"""The relay's errors. Each carries what OpenAI's error envelope needs; only
``relay.http`` turns them into HTTP responses. Messages never contain secrets."""

from __future__ import annotations


class RelayError(Exception):
    """Base class: an error with an HTTP status and OpenAI's envelope fields."""

    status = 500
    type = "server_error"
    code: str | None = None

    def __init__(self, message: str, *, code: str | None = None, param: str | None = None):
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        self.param = param


class InvalidRequest(RelayError):
    """Something in the client's request is wrong: the message says what."""

    status = 400
    type = "invalid_request_error"


class InvalidOffer(InvalidRequest):
    """The SDP offer cannot be answered."""

    code = "invalid_offer"


class PayloadTooLarge(InvalidRequest):
    """A body, offer or event over its limit."""

    status = 413
    code = "payload_too_large"


class RequestTimeout(InvalidRequest):
    """The client took too long to send its request."""

    status = 408
    code = "request_timeout"


class Unauthorized(InvalidRequest):
    """Missing, unknown or expired credentials."""

    status = 401
    code = "invalid_api_key"


class NotFound(InvalidRequest):
    """No such route, call or recording (also for one the caller may not see)."""

    status, code = 404, "not_found"


class Overloaded(RelayError):
    """This process is full or draining; the client should retry elsewhere or later."""

    status = 503
    type = "server_error"
    code = "relay_overloaded"

    def __init__(self, message: str, *, retry_after_secs: int = 1):
        super().__init__(message)
        self.retry_after_secs = retry_after_secs


class UpstreamError(RelayError):
    """OpenAI (or the emulator) failed or could not be reached."""

    status = 502
    type = "upstream_error"
    code = "upstream_error"


class UpstreamAuthError(UpstreamError):
    """OpenAI refused the relay's own key: an operator's problem, not the client's."""

    code = "upstream_auth_failed"


class UpstreamTimeout(UpstreamError):
    """OpenAI did not answer within the relay's bound."""

    status, code = 504, "upstream_timeout"


class UpstreamRejected(RelayError):
    """OpenAI refused the request for a reason that is the client's (bad session
    config, bad offer): passed through with OpenAI's own status and envelope."""

    type = "invalid_request_error"

    def __init__(self, status: int, message: str, *, code: str | None, param: str | None):
        super().__init__(message, code=code, param=param)
        self.status = status
