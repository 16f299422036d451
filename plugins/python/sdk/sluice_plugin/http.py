"""Outbound HTTP (``wasi:http``) for handlers that call a service.

The handler must be built against a world that imports it: put
``world = "message-handler-http"`` (or ``"message-handler-io"``) under
``[tool.sluice]`` in its ``pyproject.toml``, and its stage must grant the
origin under ``[plugin.capabilities.http]``. A request the grant refuses,
a timeout, a body over the grant's cap or no answer raises
:class:`HttpError`; an answer, whatever its status, is a :class:`Response`
to decide on::

    from sluice_plugin import http

    response = http.request("POST", "https://api.example.com/lookup", body=b"...")
    if response.status == 429:
        ...
"""

from http import HTTPStatus
from typing import Iterable, List, Optional, Tuple, Union
from urllib.parse import urlsplit

try:
    from componentize_py_types import Err
    from wit_world.imports import outgoing_handler, streams
    from wit_world.imports import wasi_http_types as types
except ImportError as error:
    raise ImportError(
        "sluice_plugin.http needs the world message-handler-http or "
        "message-handler-io: set `world` under [tool.sluice] in pyproject.toml"
    ) from error

# Body bytes written per call: what a wasi:http output stream accepts.
_WRITE_CHUNK = 4096
_READ_CHUNK = 64 * 1024


class HttpError(Exception):
    """A request that got no answer. ``code`` is the wasi:http error's
    name as the Rust SDK prints it (``HttpRequestDenied``,
    ``ConnectionTimeout``, ``HttpResponseBodySize``...)."""

    def __init__(self, code: str, detail: str = ""):
        super().__init__(f"{code}: {detail}" if detail else code)
        self.code = code
        self.detail = detail


class Response:
    """An answer: status, headers in order, and the whole body."""

    def __init__(self, status: int, headers: List[Tuple[str, bytes]], body: bytes):
        self.status = status
        self.headers = headers
        self.body = body

    @property
    def status_line(self) -> str:
        """The status with its standard reason phrase, as Rust's ``http``
        crate prints it: ``"404 Not Found"`` (the number alone when the
        status has no standard phrase)."""
        try:
            return f"{self.status} {HTTPStatus(self.status).phrase}"
        except ValueError:
            return str(self.status)

    def header(self, name: str) -> Optional[str]:
        """The first value of header ``name`` (any case) as text, if any."""
        wanted = name.lower()
        for key, value in self.headers:
            if key.lower() == wanted:
                return value.decode("utf-8", "replace")
        return None


def _code_name(code) -> str:
    return type(code).__name__.removeprefix("ErrorCode_")


def _failed(code) -> HttpError:
    detail = getattr(code, "value", None)
    return HttpError(_code_name(code), "" if detail is None else str(detail))


_METHODS = {
    "GET": types.Method_Get,
    "HEAD": types.Method_Head,
    "POST": types.Method_Post,
    "PUT": types.Method_Put,
    "DELETE": types.Method_Delete,
    "OPTIONS": types.Method_Options,
    "PATCH": types.Method_Patch,
}


def _method(name: str):
    known = _METHODS.get(name.upper())
    return known() if known is not None else types.Method_Other(name)


def _scheme(name: str):
    if name == "https":
        return types.Scheme_Https()
    if name == "http":
        return types.Scheme_Http()
    return types.Scheme_Other(name)


def _bytes(value: Union[str, bytes]) -> bytes:
    return value.encode("utf-8") if isinstance(value, str) else value


def _wait(pollable) -> None:
    with pollable:
        pollable.block()


def request(
    method: str,
    url: str,
    headers: Iterable[Tuple[str, Union[str, bytes]]] = (),
    body: Union[str, bytes] = b"",
) -> Response:
    """Send one request and read the whole answer."""
    parts = urlsplit(url)
    try:
        fields = types.Fields.from_list([(name, _bytes(value)) for name, value in headers])
    except Err as error:
        raise HttpError("HeaderError", type(error.value).__name__.removeprefix("HeaderError_")) from None
    outgoing = types.OutgoingRequest(fields)
    outgoing.set_method(_method(method))
    outgoing.set_scheme(_scheme(parts.scheme))
    outgoing.set_authority(parts.netloc)
    outgoing.set_path_with_query((parts.path or "/") + (f"?{parts.query}" if parts.query else ""))
    outgoing_body = outgoing.body()
    try:
        future = outgoing_handler.handle(outgoing, None)
    except Err as error:
        raise _failed(error.value) from None
    # The request is under way before its body is written, so a body larger
    # than the host's buffer streams instead of blocking.
    payload = _bytes(body)
    try:
        with outgoing_body.write() as stream:
            for start in range(0, len(payload), _WRITE_CHUNK):
                stream.blocking_write_and_flush(payload[start : start + _WRITE_CHUNK])
        types.OutgoingBody.finish(outgoing_body, None)
    except Err:
        pass  # the answer (or its error) says what went wrong
    with future:
        while (answer := future.get()) is None:
            _wait(future.subscribe())
    if isinstance(answer, Err):
        raise HttpError("InternalError", "the response was already taken")
    if isinstance(answer.value, Err):
        raise _failed(answer.value.value)
    return _read(answer.value.value)


def _read(incoming) -> Response:
    with incoming:
        status = incoming.status()
        with incoming.headers() as fields:
            headers = fields.entries()
        incoming_body = incoming.consume()
        chunks = []
        with incoming_body.stream() as stream:
            while True:
                try:
                    chunks.append(stream.blocking_read(_READ_CHUNK))
                except Err as error:
                    if isinstance(error.value, streams.StreamError_Closed):
                        break
                    code = types.http_error_code(error.value.value)
                    raise (_failed(code) if code is not None else HttpError("InternalError", "the body could not be read")) from None
        with types.IncomingBody.finish(incoming_body):
            pass  # no trailers wanted
    return Response(status, headers, b"".join(chunks))
