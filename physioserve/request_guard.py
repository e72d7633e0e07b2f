"""The request layer: every malformed request gets a 4xx with the service's JSON body, before BentoML parses it.

`RequestGuard` is an ASGI middleware in front of every API route of the service (`api_routes` reads
them from the BentoML service: path, form fields, file fields). Per request:

1. method: an API route takes POST (OPTIONS passes, for CORS); anything else gets 405;
2. size: a body over the route's limit gets 413 (Content-Length, or counted for chunked bodies);
3. media type: JSON routes take `application/json` (or no Content-Type); file routes take
   `multipart/form-data` with a boundary; anything else gets 415 (400 for a missing boundary);
4. form structure (file routes): the body is read once through a streaming multipart parser
   (python-multipart, spooled to disk beyond 1 MB) and replayed to the app when it is well formed:
   no unknown field (a file sent as `upload`), file fields sent as files (not plain text values),
   text fields as text of at most 64 KB, at most 16 parts, the required file present;
5. answers: a 4xx that BentoML writes itself (its pydantic validation of JSON bodies) is rewritten
   into the same body: `{"error", "field", "fix"}` (plus BentoML's `detail`).

A route with only optional files (`/predict`: JSON windows, or the binary `windows_npz` file) takes
both bodies; BentoML's OpenAPI schema (`/docs.json`) lists only the form for it, so the guard adds
the JSON body (the same fields, files left out) to the schema it serves.

Answers name the field (`Content-Type`, `body`, `file`, `windows[0].fs`...) and a fix the caller
can apply over HTTP. Nothing here runs the model; the endpoints validate values (api_requests.py).
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass

from python_multipart.exceptions import MultipartParseError
from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.datastructures import Headers

from .api_requests import BadInput

MB = 1 << 20
SPOOL_BYTES = MB  # form bodies beyond this are spooled to a temporary file while they are checked
MAX_TEXT_FIELD = 64 << 10
MAX_PARTS = 16
JSON_TYPES = ("", "application/json")
DOCS = "/docs.json"  # BentoML's OpenAPI schema


@dataclass(frozen=True)
class Route:
    """What an API route takes: its body limit, form fields and which of them are files (none: JSON)."""

    path: str
    limit: int
    fields: tuple[str, ...]
    file_fields: frozenset[str]
    required: frozenset[str]
    example: str = "night.edf"  # the file named in the fixes of a form route

    @property
    def curl(self) -> str:
        """How to send this route's file, e.g. `curl -F file=@night.edf`."""
        return f"curl -F {sorted(self.file_fields)[0]}=@{self.example}"

    @property
    def takes_json(self) -> bool:
        """JSON routes, and form routes whose files are all optional (/predict: JSON windows or windows_npz)."""
        return not (self.file_fields & self.required)


def api_routes(service, limits: dict[str, int], default: int, examples: dict[str, str] | None = None) -> dict[str, Route]:
    """{path: Route} of every API of a BentoML service (its input models say the fields); `examples`: file per route."""
    routes = {}
    for method in service.apis.values():
        spec = method.input_spec
        fields = tuple(spec.model_fields)
        required = frozenset(k for k, f in spec.model_fields.items() if f.is_required())
        routes[method.route] = Route(method.route, limits.get(method.route, default), fields,
                                     frozenset(spec.multipart_fields), required,
                                     (examples or {}).get(method.route, "night.edf"))
    return routes


def _too_large(route: Route, size: int) -> BadInput:
    return BadInput("body" if route.takes_json else "file",
                    f"request body of {size} bytes is over the {route.limit} byte limit of {route.path}",
                    "send less per request (see /metadata limits)", status=413)


class _FormCheck:
    """Callbacks of a streaming multipart parser that collect each part's name, filename and text size."""

    def __init__(self) -> None:
        self.parts: list[dict] = []
        self.ended = False
        self._field = self._value = b""
        self._headers: dict[bytes, bytes] = {}

    def callbacks(self) -> dict:
        return {
            "on_part_begin": self._begin, "on_header_field": self._header_field, "on_header_value": self._header_value,
            "on_header_end": self._header_end, "on_headers_finished": self._headers_finished,
            "on_part_data": self._data, "on_end": self._end,
        }

    def _begin(self) -> None:
        self._headers = {}

    def _header_field(self, data: bytes, start: int, end: int) -> None:
        self._field += data[start:end]

    def _header_value(self, data: bytes, start: int, end: int) -> None:
        self._value += data[start:end]

    def _header_end(self) -> None:
        self._headers[self._field.strip().lower()] = self._value.strip()
        self._field = self._value = b""

    def _headers_finished(self) -> None:
        _, options = parse_options_header(self._headers.get(b"content-disposition", b""))
        name = options.get(b"name")
        self.parts.append({"name": None if name is None else name.decode("latin-1"),
                           "file": b"filename" in options, "size": 0})

    def _data(self, data: bytes, start: int, end: int) -> None:
        self.parts[-1]["size"] += end - start

    def _end(self) -> None:
        self.ended = True


def check_form(route: Route, parts: list[dict]) -> None:
    """Raise BadInput when the form's parts do not fit the route's fields."""
    files, example = sorted(route.file_fields), route.example
    expected = ", ".join(f"{f} (file)" if f in route.file_fields else f for f in route.fields)
    for part in parts:
        name = part["name"]
        if name not in route.fields:
            raise BadInput(name or "(unnamed)", f"unknown form field {name!r}",
                           f"send the file as the form field {files[0]!r} (curl -F {files[0]}=@{example}); "
                           f"fields: {expected}")
        if name in route.file_fields and not part["file"]:
            raise BadInput(name, "a plain text value where a file goes",
                           f"send it as a file part (curl -F {name}=@{example})")
        if name not in route.file_fields and part["file"]:
            raise BadInput(name, "a file where a text value goes", f"send {name} as a text value (curl -F {name}=...)")
        if name not in route.file_fields and part["size"] > MAX_TEXT_FIELD:
            raise BadInput(name, f"{part['size']} bytes of text (at most {MAX_TEXT_FIELD})", "send a short value")
    if len(parts) > MAX_PARTS:
        raise BadInput("body", f"{len(parts)} form parts (at most {MAX_PARTS})", "send each field once")
    missing = sorted(route.required - {part["name"] for part in parts})
    if missing:
        raise BadInput(missing[0], "missing from the form", f"send it (curl -F {missing[0]}=@{example})")


def _pydantic_answer(body: dict) -> BadInput:
    """BentoML's answer to a pydantic ValidationError ({"error", "detail": [...]}) -> BadInput."""
    detail = body.get("detail") or [{}]
    first = detail[0] if isinstance(detail, list) and detail and isinstance(detail[0], dict) else {}
    loc = [part for part in first.get("loc", []) if part not in ("body",)]
    field = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in loc).lstrip(".") or "body"
    kind, message = first.get("type", ""), str(first.get("msg", body.get("error", "invalid request")))
    message = message.removeprefix("Value error, ")
    if kind == "json_invalid":
        fix = "send a valid JSON object (Content-Type: application/json); the schema is at /docs.json"
    elif kind == "missing":
        fix = f"add {field}; the schema is at /docs.json"
    elif field == "body":
        fix = "send a JSON object with the fields the schema at /docs.json lists"
    else:
        fix = f"send {field} as the schema at /docs.json describes it"
    return BadInput(field, message, fix, status=400)


class RequestGuard:
    """ASGI middleware: the checks of the module doc, on the API routes of `routes` ({path: Route})."""

    def __init__(self, app, routes: dict[str, Route]):
        self.app, self.routes = app, routes

    async def __call__(self, scope, receive, send):
        route = self.routes.get(scope.get("path", "")) if scope["type"] == "http" else None
        if scope["type"] == "http" and scope.get("path") == DOCS and scope.get("method") == "GET":
            return await self.app(scope, receive, _documenting(send, self.routes))
        if route is None or scope.get("method") == "OPTIONS":  # not an API route, or a CORS preflight
            return await self.app(scope, receive, send)
        try:
            if scope.get("method") != "POST":
                raise BadInput("method", f"{scope.get('method')} is not allowed on {route.path}",
                               f"send POST {route.path}", status=405)
            receive = await self._checked(scope, receive, route)
        except BadInput as error:
            return await _send_json(send, error.status, error.body())
        await self.app(scope, receive, _rewriting(send))

    async def _checked(self, scope, receive, route: Route):
        """The request's `receive`, replaying the body when it had to be read; BadInput when malformed."""
        headers = Headers(scope=scope)
        declared = headers.get("content-length")
        if declared is not None and (not declared.isdigit()):
            raise BadInput("Content-Length", f"{declared!r} is not a byte count", "send a valid Content-Length")
        if declared is not None and int(declared) > route.limit:
            await _drain(receive, int(declared))
            raise _too_large(route, int(declared))
        media, options = parse_options_header(headers.get("content-type", ""))
        media = media.decode("latin-1").lower()
        if route.file_fields and (media == "multipart/form-data" or not route.takes_json):
            if media != "multipart/form-data":
                raise BadInput("Content-Type", f"{media or 'no Content-Type'}, but {route.path} takes a form upload",
                               f"send multipart/form-data with the file ({route.curl})", 415)
            boundary = options.get(b"boundary")
            if not boundary:
                raise BadInput("Content-Type", "multipart/form-data without a boundary parameter",
                               f"let the HTTP client write the form ({route.curl}, requests files=...) "
                               "instead of setting Content-Type by hand")
            return await self._checked_form(receive, route, boundary)
        if media not in JSON_TYPES:
            also = f", or multipart/form-data with the file {sorted(route.file_fields)[0]}" if route.file_fields else ""
            raise BadInput("Content-Type", f"{media}, but {route.path} takes JSON{also}",
                           f"send a JSON body with Content-Type: application/json{also}", 415)
        if declared is None:  # chunked: read it all (up to the limit) before the app sees it
            body = tempfile.SpooledTemporaryFile(max_size=route.limit + 1)
            await _read_body(receive, body, route, None)
            return _replay(body, receive)
        return receive

    async def _checked_form(self, receive, route: Route, boundary: bytes):
        check = _FormCheck()
        parser = MultipartParser(boundary, check.callbacks())
        body = tempfile.SpooledTemporaryFile(max_size=SPOOL_BYTES)
        try:
            try:
                await _read_body(receive, body, route, parser)
                parser.finalize()
            except MultipartParseError as error:
                raise BadInput("body", f"not a well-formed multipart/form-data body ({error})",
                               f"let the HTTP client write the form ({route.curl})") from None
            if not check.ended:
                raise BadInput("body", "the multipart/form-data body ends before its closing boundary (truncated)",
                               f"send the whole form ({route.curl})")
            check_form(route, check.parts)
        except BadInput:
            body.close()
            raise
        return _replay(body, receive)


async def _read_body(receive, body, route: Route, parser) -> None:
    size = 0
    while True:
        message = await receive()
        if message["type"] != "http.request":
            raise BadInput("body", "the client disconnected during the upload", "send the request again")
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > route.limit:
            if message.get("more_body"):
                await _drain(receive, 64 * MB)
            raise _too_large(route, size)
        body.write(chunk)
        if parser is not None and chunk:
            parser.write(chunk)
        if not message.get("more_body"):
            body.seek(0)
            return


def _replay(body, receive):
    """A `receive` that hands the app the spooled body in 1 MB chunks, then the client's own messages."""
    done = False

    async def replay():
        nonlocal done
        if done:
            return await receive()
        chunk = body.read(MB)
        more = bool(chunk) and body.tell() < _size(body)
        if not more:
            done = True
            body.close()
        return {"type": "http.request", "body": chunk, "more_body": more}

    return replay


def _size(body) -> int:
    here = body.tell()
    end = body.seek(0, 2)
    body.seek(here)
    return end


def _rewriting(send):
    """A `send` that rewrites a 4xx JSON answer without a `field` (BentoML's own) into the service's body."""
    held: dict = {}

    async def wrapped(message):
        if message["type"] == "http.response.start" and 400 <= message["status"] < 500:
            held["start"], held["body"] = message, b""
            return None
        if "start" not in held:
            return await send(message)
        held["body"] += message.get("body", b"")
        if message.get("more_body"):
            return None
        start, body = held.pop("start"), held.pop("body")
        try:
            data = json.loads(body)
        except ValueError:
            data = None
        if isinstance(data, list) and len(data) == 1 and isinstance(data[0], dict):
            data = data[0]  # BentoML 1.4 answers its 4xx exceptions as a one-item list
        if isinstance(data, dict) and "field" not in data:
            error = _pydantic_answer(data) if "detail" in data else BadInput(
                "body", str(data.get("error", "refused")), "see /docs.json for what this route takes", start["status"])
            error.status = start["status"]
            return await _send_json(send, start["status"], {**error.body(), **({"detail": data["detail"]} if "detail" in data else {})})
        await send(start)
        return await send({"type": "http.response.body", "body": body})

    return wrapped


def with_json_bodies(spec: dict, routes: dict[str, Route]) -> dict:
    """The OpenAPI `spec` with an application/json request body added to the form routes that take JSON too."""
    for route in routes.values():
        body = spec.get("paths", {}).get(route.path, {}).get("post", {}).get("requestBody", {}).get("content", {})
        form = body.get("multipart/form-data")
        if not route.file_fields or not route.takes_json or form is None or "application/json" in body:
            continue
        schema = dict(form["schema"])
        schema["properties"] = {k: v for k, v in schema.get("properties", {}).items() if k not in route.file_fields}
        body["application/json"] = {"schema": schema}
    return spec


def _documenting(send, routes: dict[str, Route]):
    """A `send` that passes the OpenAPI schema through `with_json_bodies`."""
    held: dict = {}

    async def wrapped(message):
        if message["type"] == "http.response.start":
            held["start"], held["body"] = message, b""
            return None
        held["body"] += message.get("body", b"")
        if message.get("more_body"):
            return None
        start, body = held.pop("start"), held.pop("body")
        if start["status"] == 200:
            body = json.dumps(with_json_bodies(json.loads(body), routes)).encode()
        headers = [(k, v) for k, v in start.get("headers", []) if k.lower() != b"content-length"]
        await send({**start, "headers": [*headers, (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})

    return wrapped


async def _drain(receive, budget: int) -> None:
    """Read and drop the body (bounded), so the client gets our answer rather than a reset connection."""
    while budget > 0:
        message = await receive()
        if message["type"] != "http.request" or not message.get("more_body"):
            return
        budget -= len(message.get("body", b""))


async def _send_json(send, status: int, data: dict) -> None:
    body = json.dumps(data).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})
