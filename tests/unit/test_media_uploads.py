"""Uploads without a database: the type rule (declared type and first bytes), filenames,
and the streaming multipart reader that stops at the first chunk past a limit."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from convodesk.domain.config_model import ChatSettings, SystemConfig
from convodesk.services import attachments
from convodesk.services.attachments import (
    UnsupportedTypeError,
    UploadLimits,
    UploadTooLargeError,
    decide_type,
    safe_filename,
    sniff,
)
from convodesk.services.errors import InvalidRequestError
from convodesk.web.api.v1.attachments import receive_file
from convodesk.workers import sender

ALLOWED = ChatSettings().attachment_types
PNG = b"\x89PNG\r\n\x1a\n" + b"\x00\x00\x00\rIHDR" + bytes(100)
JPEG = b"\xff\xd8\xff\xe0\x00\x10JFIF\x00" + bytes(100)
PDF = b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n" + bytes(100)
EXE = b"MZ\x90\x00\x03\x00\x00\x00" + bytes(100)
SAMPLES = {
    "image/jpeg": JPEG,
    "image/png": PNG,
    "image/webp": b"RIFF\x24\x00\x00\x00WEBPVP8 " + bytes(40),
    "application/pdf": PDF,
    "video/mp4": b"\x00\x00\x00\x20ftypisom\x00\x00\x02\x00" + bytes(40),
    "audio/ogg": b"OggS\x00\x02" + bytes(40),
    "audio/mpeg": b"ID3\x04\x00\x00" + bytes(40),
    "audio/aac": b"\xff\xf1\x50\x80" + bytes(40),
}


@pytest.mark.parametrize("kind", sorted(SAMPLES))
def test_each_default_type_is_recognised_and_accepted(kind: str) -> None:
    found = sniff(SAMPLES[kind])
    assert found is not None
    assert kind in found
    assert decide_type(kind, SAMPLES[kind], ALLOWED) == kind


def test_mp3_frames_without_a_tag_are_mpeg_and_adts_is_aac() -> None:
    assert sniff(b"\xff\xfb\x90\x64" + bytes(20)) == ("audio/mpeg",)
    assert sniff(b"\xff\xf9\x50\x80" + bytes(20)) == ("audio/aac",)


def test_a_program_declared_as_png_is_refused() -> None:
    with pytest.raises(UnsupportedTypeError) as caught:
        decide_type("image/png", EXE, ALLOWED)
    message = str(caught.value)
    assert "declared image/png but its content is application/x-msdownload" in message
    assert "allowed types: image/jpeg, image/png" in message


def test_a_known_type_must_start_as_that_type_does() -> None:
    with pytest.raises(UnsupportedTypeError, match="does not look like image/png"):
        decide_type("image/png", b"just some text, no picture" * 3, ALLOWED)
    with pytest.raises(UnsupportedTypeError, match="content is application/pdf"):
        decide_type("image/jpeg", PDF, ALLOWED)


def test_a_type_that_is_not_allowed_is_refused_whatever_the_content() -> None:
    with pytest.raises(UnsupportedTypeError, match="files of type text/html are not allowed"):
        decide_type("text/html", b"<html></html>", ALLOWED)
    with pytest.raises(UnsupportedTypeError):
        attachments.check_declared("application/x-msdownload", ALLOWED)
    attachments.check_declared("application/octet-stream", ALLOWED)  # waits for the content
    attachments.check_declared(None, ALLOWED)


def test_without_a_declared_type_the_content_decides() -> None:
    assert decide_type(None, PNG, ALLOWED) == "image/png"
    assert decide_type("application/octet-stream", PDF, ALLOWED) == "application/pdf"
    with pytest.raises(UnsupportedTypeError, match="looks like application/x-msdownload"):
        decide_type("application/octet-stream", EXE, ALLOWED)
    with pytest.raises(UnsupportedTypeError, match="no recognised type"):
        decide_type("", b"plain words", ALLOWED)


def test_aliases_and_parameters_are_normalised() -> None:
    assert decide_type("IMAGE/JPG; name=x", JPEG, ALLOWED) == "image/jpeg"
    assert decide_type("audio/mp3", SAMPLES["audio/mpeg"], ALLOWED) == "audio/mpeg"


def test_a_type_without_a_signature_is_accepted_unless_the_content_is_something_else() -> None:
    allowed = (*ALLOWED, "text/plain", "text/csv")
    assert decide_type("text/plain", b"order 42: shipped", allowed) == "text/plain"
    with pytest.raises(UnsupportedTypeError, match="content is application/x-executable"):
        decide_type("text/plain", b"\x7fELF\x02\x01\x01" + bytes(20), allowed)
    with pytest.raises(UnsupportedTypeError, match="content is text/html"):
        decide_type("text/csv", b"\xef\xbb\xbf  <!DOCTYPE html><script>", allowed)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("invoice.pdf", "invoice.pdf"),
        ("../../etc/passwd", "passwd"),
        ("C:\\Users\\anna\\My Photo.jpg", "My Photo.jpg"),
        ('a"b<c>d|e?.png', "a_b_c_d_e_.png"),
        ("photo\u202egnp.exe", "photognp.exe"),  # no right-to-left override
        ("line\r\nbreak.png", "line__break.png"),
        ("...", "attachment.png"),
        ("", "attachment.png"),
        (None, "attachment.png"),
        ("  spaced   out .png ", "spaced out .png"),
    ],
)
def test_filenames_are_made_safe(raw: str | None, expected: str) -> None:
    assert safe_filename(raw, "image/png") == expected


def test_long_filenames_keep_their_extension() -> None:
    name = safe_filename("x" * 500 + ".jpeg", "image/jpeg")
    assert len(name) == attachments.MAX_FILENAME
    assert name.endswith("x.jpeg")
    assert safe_filename("é" * 300, "image/jpeg") == "é" * attachments.MAX_FILENAME


# ------------------------------------------------------------------ the streaming reader

BOUNDARY = b"----convodesk-test-boundary"


def file_part(content: bytes, *, content_type: str = "image/png", name: str = "file") -> bytes:
    return (
        b"--" + BOUNDARY + b"\r\n"
        b'Content-Disposition: form-data; name="' + name.encode() + b'"; filename="pic.png"\r\n'
        b"Content-Type: " + content_type.encode() + b"\r\n\r\n" + content + b"\r\n"
    )


def multipart(content: bytes, *, content_type: str = "image/png", name: str = "file") -> bytes:
    """A form with a small text field, then the file."""
    note = b"--" + BOUNDARY + b'\r\nContent-Disposition: form-data; name="note"\r\n\r\nhello\r\n'
    part = file_part(content, content_type=content_type, name=name)
    return note + part + b"--" + BOUNDARY + b"--\r\n"


class CountingStream:
    """The request body in 4 KiB chunks, counting how many were taken."""

    def __init__(self, body: bytes, chunk: int = 4096) -> None:
        self.chunks = [body[i : i + chunk] for i in range(0, len(body), chunk)]
        self.taken = 0

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for piece in self.chunks:
            self.taken += 1
            yield piece


def receive(body: bytes | CountingStream, tmp_path: Path, max_bytes: int = 100_000) -> Path:
    stream = body if isinstance(body, CountingStream) else CountingStream(body)
    partial = tmp_path / "upload.part"
    limits = UploadLimits(max_bytes=max_bytes, types=ALLOWED)
    received = asyncio.run(receive_file(stream.__aiter__(), BOUNDARY, limits, partial))
    assert received.partial == partial
    return partial


def test_the_file_part_is_written_and_other_fields_skipped(tmp_path: Path) -> None:
    content = PNG + bytes(range(256)) * 1000  # several chunks, several buffer flushes
    partial = tmp_path / "upload.part"
    limits = UploadLimits(max_bytes=1_000_000, types=ALLOWED)
    stream = CountingStream(multipart(content))
    received = asyncio.run(receive_file(stream.__aiter__(), BOUNDARY, limits, partial))
    assert (received.size, received.content_type, received.filename) == (
        len(content),
        "image/png",
        "pic.png",
    )
    assert partial.read_bytes() == content


def test_reading_stops_at_the_first_chunk_past_the_limit(tmp_path: Path) -> None:
    stream = CountingStream(multipart(PNG + bytes(1_000_000)))
    with pytest.raises(UploadTooLargeError, match="over 10000 bytes"):
        receive(stream, tmp_path, max_bytes=10_000)
    assert stream.taken <= 4  # 10 000 bytes in 4 KiB chunks, of 245
    assert len(stream.chunks) > 200
    assert not (tmp_path / "upload.part").exists()


def test_a_file_of_exactly_the_limit_is_accepted(tmp_path: Path) -> None:
    content = PNG + bytes(10_000 - len(PNG))
    assert receive(multipart(content), tmp_path, max_bytes=10_000).stat().st_size == 10_000
    with pytest.raises(UploadTooLargeError):
        receive(multipart(content + b"!"), tmp_path, max_bytes=10_000)


def test_a_disallowed_declared_type_is_refused_before_the_file_is_read(tmp_path: Path) -> None:
    stream = CountingStream(multipart(bytes(100_000), content_type="application/x-msdownload"))
    with pytest.raises(UnsupportedTypeError):
        receive(stream, tmp_path)
    assert stream.taken == 1
    assert not (tmp_path / "upload.part").exists()


def test_a_mismatch_is_refused_after_the_first_bytes(tmp_path: Path) -> None:
    stream = CountingStream(multipart(EXE + bytes(100_000)))
    with pytest.raises(UnsupportedTypeError, match="content is application/x-msdownload"):
        receive(stream, tmp_path)
    assert stream.taken == 1
    assert not (tmp_path / "upload.part").exists()


def test_a_short_file_is_checked_when_it_ends(tmp_path: Path) -> None:
    assert receive(multipart(b"\xff\xd8\xff", content_type="image/jpeg"), tmp_path).exists()
    with pytest.raises(UnsupportedTypeError):
        receive(multipart(b"MZ"), tmp_path)


def test_bodies_without_exactly_one_file_are_refused(tmp_path: Path) -> None:
    with pytest.raises(InvalidRequestError) as missing:
        receive(multipart(PNG, name="picture"), tmp_path)
    assert "expected the file in a field named file" in str(missing.value)
    with pytest.raises(InvalidRequestError, match="the file is empty"):
        receive(multipart(b""), tmp_path)
    two = file_part(PNG) + file_part(JPEG, content_type="image/jpeg") + b"--" + BOUNDARY + b"--"
    assert two.count(b'name="file"') == 2
    with pytest.raises(InvalidRequestError, match="exactly one file"):
        receive(two, tmp_path)
    assert not (tmp_path / "upload.part").exists()
    with pytest.raises(InvalidRequestError, match="malformed"):
        receive(b"--" + BOUNDARY + b"\r\nno headers at all\x00\r\n", tmp_path)


# ------------------------------------------------------------------------- public URLs


def test_the_public_url_prefers_the_attachment_base_url() -> None:
    token = "tok123"
    bare = SystemConfig()
    assert attachments.media_url(bare, token) is None
    public = SystemConfig(public_base_url="https://cc.example.com/")
    assert attachments.media_url(public, token) == "https://cc.example.com/sms/richcontent/tok123"
    both = SystemConfig(
        public_base_url="https://cc.example.com",
        chat_settings=ChatSettings(attachment_base_url="https://media.example.com/cd"),
    )
    assert (
        attachments.media_url(both, token) == "https://media.example.com/cd/sms/richcontent/tok123"
    )


def test_the_sender_cannot_send_an_upload_without_a_public_url() -> None:
    content = {"attachment": {"token": "tok123", "filename": "a.png"}}
    with pytest.raises(sender.JobError, match="no public URL for attachments"):
        sender._media(SystemConfig(), content)
    public = SystemConfig(public_base_url="https://cc.example.com")
    assert sender._media(public, content) == (
        "https://cc.example.com/sms/richcontent/tok123",
        "a.png",
    )
