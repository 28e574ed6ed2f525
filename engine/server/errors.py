"""Every error the HTTP layer answers is JSON of one shape: ``{"error", "message", "errors": [...]}``.

``errors`` lists each bad field with its path and reason (and ``closest`` valid keys for an unknown
gpu/llm/quantization key), exactly as :meth:`vramplan.errors.VramplanError.as_dict` writes it.
"""

from __future__ import annotations

from starlette.responses import JSONResponse

from ..errors import RequestError

# Status -> the error name a client can switch on.
_NAMES = {
    400: "MalformedJSON",
    401: "Unauthorized",
    403: "Forbidden",
    404: "NotFound",
    405: "MethodNotAllowed",
    413: "PayloadTooLarge",
    415: "UnsupportedMediaType",
    422: "RequestError",
    429: "TooManyRequests",
    500: "InternalError",
    503: "ServiceUnavailable",
}


def error_response(status: int, message: str, *, errors: list[dict] | None = None,
                   error: str | None = None, headers: dict | None = None) -> JSONResponse:
    body = {"error": error or _NAMES.get(status, "Error"), "message": message,
            "errors": errors if errors is not None else []}
    return JSONResponse(body, status_code=status, headers=headers)


def unauthorized(message: str, *, invalid: bool) -> JSONResponse:
    # RFC 6750 §3: no error code when credentials are missing, invalid_token when they are wrong.
    challenge = 'Bearer realm="vramplan"'
    if invalid:
        challenge += ', error="invalid_token", error_description="the token is unknown or revoked"'
    return error_response(401, message, headers={"WWW-Authenticate": challenge})


def request_error_response(exc: RequestError) -> JSONResponse:
    """422 for a request the engine refused: every bad field, and closest keys for unknown ones."""
    body = exc.as_dict()
    body.setdefault("errors", [])
    return JSONResponse(body, status_code=422)
