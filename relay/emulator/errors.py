"""OpenAI's error envelope, shared by HTTP responses and ``error`` events."""

from __future__ import annotations

from typing import Any


class ApiError(Exception):
    """An error as OpenAI reports it: ``{"error": {message, type, code, param}}``.

    ``status`` only matters over HTTP; on the data channel the same error becomes an
    ``error`` event and the session carries on (OpenAI's errors are non-fatal).
    """

    def __init__(
        self,
        message: str,
        code: str | None,
        param: str | None = None,
        *,
        type_: str = "invalid_request_error",
        status: int = 400,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.code = code
        self.param = param
        self.type = type_
        self.status = status

    def body(self) -> dict[str, Any]:
        return {
            "error": {
                "message": self.message,
                "type": self.type,
                "code": self.code,
                "param": self.param,
            }
        }


def mask_key(key: str) -> str:
    """Mask a key the way OpenAI's 401 message does; never reveal a short key."""
    if len(key) < 12:
        return "***"
    return f"{key[:5]}***{key[-2:]}"


def invalid_api_key(key: str | None) -> ApiError:
    if not key:
        return ApiError(
            "You didn't provide an API key. You need to provide your API key in an "
            "Authorization header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY).",
            "invalid_api_key",
            status=401,
        )
    return ApiError(
        f"Incorrect API key provided: {mask_key(key)}. You can find your API key at "
        "https://platform.openai.com/account/api-keys.",
        "invalid_api_key",
        status=401,
    )


def invalid_offer() -> ApiError:
    return ApiError(
        "Invalid SDP offer. Please try again with a WHIP-compliant offer.", "invalid_offer"
    )
