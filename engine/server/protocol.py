"""uvicorn's HTTP protocol, answering requests it cannot parse with the API's JSON error.

A request uvicorn rejects before the app sees it (``Content-Length: -1``, a malformed request line
or header) gets uvicorn's plain-text 400; the README promises every error is JSON. These
subclasses override only how that 400 is written, for whichever parser uvicorn would pick
("auto": httptools when installed, else h11). They live at module level so that ``--workers N``
can hand them to its worker processes (uvicorn pickles its config).
"""

from __future__ import annotations

import json

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol



def _json_400(message: str) -> tuple[bytes, list[tuple[bytes, bytes]]]:
    body = json.dumps({"error": "BadRequest", "message": f"malformed HTTP request: {message}", "errors": []}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode("ascii")),
               (b"connection", b"close"), (b"x-content-type-options", b"nosniff"), (b"cache-control", b"no-store")]
    return body, headers


class JsonErrorsH11Protocol(H11Protocol):
    """h11: the parse-error 400 in the API's JSON error shape."""

    def send_400_response(self, msg: str) -> None:
        body, headers = _json_400(msg)
        for event in (h11.Response(status_code=400, headers=headers, reason=b"Bad Request"), h11.Data(data=body),
                      h11.EndOfMessage()):
            self.transport.write(self.conn.send(event))
        self.transport.close()


try:
    import httptools  # noqa: F401
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
except ImportError:
    JsonErrorsHttpToolsProtocol = None
else:
    class JsonErrorsHttpToolsProtocol(HttpToolsProtocol):  # type: ignore[no-redef]
        """httptools: the parse-error 400 in the API's JSON error shape."""

        def send_400_response(self, msg: str) -> None:
            body, headers = _json_400(msg)
            head = b"HTTP/1.1 400 Bad Request\r\n" + b"".join(n + b": " + v + b"\r\n" for n, v in headers)
            self.transport.write(head + b"\r\n" + body)
            self.transport.close()


def json_errors_protocol() -> type:
    """The protocol class ``vramplan serve`` gives uvicorn: httptools' where it is installed, else h11's."""
    return JsonErrorsHttpToolsProtocol or JsonErrorsH11Protocol
