"""Agent uploads: ``POST /api/v1/conversations/{id}/attachments`` (multipart/form-data, the
file in a field named ``file``) answers 201 with the upload's token, which a reply
``{"attachment": token}`` then sends.

The body is streamed, never held in memory: the file part goes straight to a temporary
file beside its final place in the attachment store. Reading stops as soon as a limit is
passed: a declared ``Content-Length`` over the limit (plus `MULTIPART_OVERHEAD` for the
boundaries and part headers) is refused before a byte is read, a file over
`attachment_max_bytes` at the first chunk past it (413); a declared type that is not allowed
is refused before the file's bytes are read, content that is not what it declares after its
first bytes (415; the rule is in `services/attachments.py`).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import IO, TYPE_CHECKING, Annotated

import python_multipart
from fastapi import APIRouter, HTTPException, Request
from fastapi import Path as PathParam
from fastapi.concurrency import run_in_threadpool
from fastapi.encoders import jsonable_encoder
from fastapi.responses import JSONResponse
from python_multipart.exceptions import FormParserError
from python_multipart.multipart import parse_options_header

from convodesk.domain.config_model import Problem
from convodesk.services import attachments
from convodesk.services.attachments import (
    ReceivedFile,
    UnsupportedTypeError,
    UploadLimits,
    UploadTooLargeError,
)
from convodesk.services.errors import InvalidRequestError, ServiceError
from convodesk.storage.conversations import MAX_CONVERSATION_ID
from convodesk.web import errors
from convodesk.web.auth import PrincipalDep, RuntimeDep

if TYPE_CHECKING:
    from python_multipart.multipart import MultipartCallbacks

router = APIRouter(prefix="/api/v1", tags=["attachments"])

FILE_FIELD = "file"
# Room for the multipart framing around the file: boundaries, part headers, small fields.
MULTIPART_OVERHEAD = 64 * 1024
WRITE_CHUNK = 256 * 1024  # buffered file data is written out (in a thread) past this

_MULTIPART_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "properties": {FILE_FIELD: {"type": "string", "format": "binary"}},
                    "required": [FILE_FIELD],
                }
            }
        },
    }
}


@router.post(
    "/conversations/{conversation_id}/attachments",
    status_code=201,
    summary="Upload a file to send as a media reply (multipart, field `file`)",
    openapi_extra=_MULTIPART_BODY,
)
async def upload_attachment(
    request: Request,
    runtime: RuntimeDep,
    principal: PrincipalDep,
    conversation_id: Annotated[int, PathParam(ge=1, le=MAX_CONVERSATION_ID)],
) -> JSONResponse:
    limits = await run_in_threadpool(attachments.upload_limits, runtime, principal, conversation_id)
    boundary = _boundary(request.headers.get("content-type"))
    try:
        _check_length(request.headers.get("content-length"), limits)
        upload = await run_in_threadpool(attachments.new_upload, runtime)
        received = await receive_file(request.stream(), boundary, limits, upload.partial)
    except (UploadTooLargeError, UnsupportedTypeError) as exc:
        return _refused(exc)
    try:
        item = await run_in_threadpool(
            attachments.record_upload, runtime, principal, conversation_id, upload, received
        )
    finally:
        received.partial.unlink(missing_ok=True)  # moved into place unless something failed
    return JSONResponse(jsonable_encoder(item), status_code=201)


def _refused(exc: ServiceError) -> JSONResponse:
    """413 or 415; the connection is closed, since the rest of the body was not read."""
    status, code = (
        (413, "payload_too_large")
        if isinstance(exc, UploadTooLargeError)
        else (415, "unsupported_media_type")
    )
    return JSONResponse(
        errors.error_body(code, str(exc), **exc.data),
        status_code=status,
        headers={"Connection": "close"},
    )


def _boundary(content_type: str | None) -> bytes:
    kind, params = parse_options_header(content_type)
    boundary = params.get(b"boundary")
    if kind != b"multipart/form-data" or not boundary:
        raise HTTPException(
            415, f"expected a multipart/form-data body with the file in a field named {FILE_FIELD}"
        )
    return boundary


def _check_length(header: str | None, limits: UploadLimits) -> None:
    if header is None or not header.strip().isdigit():
        return  # chunked: the limits are checked while reading
    if int(header) > limits.max_bytes + MULTIPART_OVERHEAD:
        raise UploadTooLargeError(
            f"the request is {int(header)} bytes; attachments are at most {limits.max_bytes} bytes",
            max_bytes=limits.max_bytes,
        )


async def receive_file(
    stream: AsyncIterator[bytes], boundary: bytes, limits: UploadLimits, partial: Path
) -> ReceivedFile:
    """Read a multipart body from `stream`, writing its `file` part to `partial`; stop at
    the first chunk past a limit. On any error `partial` is removed."""
    receiver = _Receiver(limits, partial)
    callbacks: MultipartCallbacks = {
        "on_part_begin": receiver.on_part_begin,
        "on_header_field": receiver.on_header_field,
        "on_header_value": receiver.on_header_value,
        "on_header_end": receiver.on_header_end,
        "on_headers_finished": receiver.on_headers_finished,
        "on_part_data": receiver.on_part_data,
        "on_part_end": receiver.on_part_end,
    }
    parser = python_multipart.MultipartParser(boundary, callbacks)
    body_limit = limits.max_bytes + MULTIPART_OVERHEAD
    read = 0
    try:
        async for chunk in stream:
            read += len(chunk)
            if read > body_limit:
                raise receiver.too_large()
            parser.write(chunk)
            await receiver.flush(force=False)
        parser.finalize()
        return await receiver.finish()
    except FormParserError as exc:
        raise InvalidRequestError(
            [Problem(path="", message=f"the multipart body is malformed: {exc}")]
        ) from exc
    finally:
        receiver.close()


class _Receiver:
    """The multipart callbacks: the `file` part to disk, other parts skipped."""

    def __init__(self, limits: UploadLimits, partial: Path) -> None:
        self._limits = limits
        self._partial = partial
        self._file: IO[bytes] | None = None
        self._done = False
        self._in_file = False
        self._files = 0
        self._field = b""
        self._value = b""
        self._headers: dict[bytes, bytes] = {}
        self._declared: str | None = None
        self._filename: str | None = None
        self._content_type: str | None = None  # decided once the first bytes are in
        self._head = bytearray()
        self._size = 0
        self._buffer: list[bytes] = []
        self._buffered = 0

    def too_large(self) -> UploadTooLargeError:
        return UploadTooLargeError(
            f"the file is over {self._limits.max_bytes} bytes, the most an attachment may be",
            max_bytes=self._limits.max_bytes,
        )

    # -- multipart callbacks (synchronous; file data is buffered for `flush`)

    def on_part_begin(self) -> None:
        self._headers, self._in_file = {}, False

    def on_header_field(self, data: bytes, start: int, end: int) -> None:
        self._field += data[start:end]

    def on_header_value(self, data: bytes, start: int, end: int) -> None:
        self._value += data[start:end]

    def on_header_end(self) -> None:
        self._headers[self._field.strip().lower()] = self._value.strip()
        self._field, self._value = b"", b""

    def on_headers_finished(self) -> None:
        _, options = parse_options_header(self._headers.get(b"content-disposition"))
        if options.get(b"name") != FILE_FIELD.encode():
            return
        self._files += 1
        if self._files > 1:
            raise InvalidRequestError(
                [Problem(path=FILE_FIELD, message="expected exactly one file")]
            )
        self._in_file = True
        raw_type = self._headers.get(b"content-type", b"").decode("latin-1")
        attachments.check_declared(raw_type, self._limits.types)
        self._declared = raw_type
        filename = options.get(b"filename")
        self._filename = filename.decode("utf-8", "replace") if filename is not None else None
        self._file = self._partial.open("wb")

    def on_part_data(self, data: bytes, start: int, end: int) -> None:
        if not self._in_file:
            return  # another field: skipped (the body limit bounds it)
        piece = data[start:end]
        self._size += len(piece)
        if self._size > self._limits.max_bytes:
            raise self.too_large()
        if len(self._head) < attachments.SNIFF_BYTES:
            self._head += piece[: attachments.SNIFF_BYTES - len(self._head)]
            if len(self._head) >= attachments.SNIFF_BYTES:
                self._decide()
        self._buffer.append(piece)
        self._buffered += len(piece)

    def on_part_end(self) -> None:
        if self._in_file:
            self._in_file, self._done = False, True
            if self._content_type is None and self._size:
                self._decide()

    def _decide(self) -> None:
        self._content_type = attachments.decide_type(
            self._declared, bytes(self._head), self._limits.types
        )

    # -- file I/O

    async def flush(self, *, force: bool) -> None:
        if self._file is None or not self._buffer or (self._buffered < WRITE_CHUNK and not force):
            return
        data = b"".join(self._buffer)
        self._buffer, self._buffered = [], 0
        await asyncio.to_thread(self._file.write, data)

    async def finish(self) -> ReceivedFile:
        if not self._done:
            raise InvalidRequestError(
                [
                    Problem(
                        path=FILE_FIELD, message=f"expected the file in a field named {FILE_FIELD}"
                    )
                ]
            )
        if self._size == 0 or self._content_type is None:
            raise InvalidRequestError([Problem(path=FILE_FIELD, message="the file is empty")])
        await self.flush(force=True)
        assert self._file is not None  # opened with the file part
        await asyncio.to_thread(self._file.close)
        self._file = None
        return ReceivedFile(
            partial=self._partial,
            size=self._size,
            content_type=self._content_type,
            filename=self._filename,
        )

    def close(self) -> None:
        """After `finish` nothing is left to do; after an error, the partial file goes."""
        if self._file is not None:
            self._file.close()
            self._file = None
            self._partial.unlink(missing_ok=True)
