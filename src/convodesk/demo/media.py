"""The pictures the demo's customers send, and the small web server that hosts them.

On Sinch, a customer's photo arrives as a ``media_message`` whose URL points at the channel's
media store, and convodesk downloads it from there (workers/media.py). The demo has no such
store, so it serves its own: a few PNG pictures drawn here, under ``{base}/media/{name}``.
They are drawn rather than shipped as files so that the package stays text only; they only
need to look like a photo of the problem the customer describes.
"""

from __future__ import annotations

import functools
import itertools
import struct
import zlib
from collections.abc import Callable

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

Color = tuple[int, int, int]
WIDTH, HEIGHT = 480, 360


class _Canvas:
    """An RGB raster with the few shapes the pictures need."""

    def __init__(self, width: int, height: int, top: Color, bottom: Color) -> None:
        self.width, self.height = width, height
        self.rows: list[bytearray] = []
        for y in range(height):
            t = y / max(1, height - 1)
            color = bytes(round(a + (b - a) * t) for a, b in zip(top, bottom, strict=True))
            self.rows.append(bytearray(color * width))

    def dot(self, x: int, y: int, color: Color) -> None:
        if 0 <= x < self.width and 0 <= y < self.height:
            self.rows[y][3 * x : 3 * x + 3] = bytes(color)

    def rect(self, x0: int, y0: int, x1: int, y1: int, color: Color) -> None:
        x0, x1 = max(0, x0), min(self.width, x1)
        for y in range(max(0, y0), min(self.height, y1)):
            self.rows[y][3 * x0 : 3 * x1] = bytes(color) * (x1 - x0)

    def polygon(self, points: list[tuple[int, int]], color: Color) -> None:
        """Fill a polygon (even-odd rule, scanline by scanline)."""
        ys = [p[1] for p in points]
        for y in range(max(0, min(ys)), min(self.height, max(ys) + 1)):
            crossings: list[float] = []
            for (xa, ya), (xb, yb) in zip(points, points[1:] + points[:1], strict=True):
                if (ya <= y < yb) or (yb <= y < ya):
                    crossings.append(xa + (y - ya) * (xb - xa) / (yb - ya))
            crossings.sort()
            for left, right in zip(crossings[::2], crossings[1::2], strict=False):
                self.rect(round(left), y, round(right), y + 1, color)

    def ellipse(self, cx: int, cy: int, rx: int, ry: int, color: Color) -> None:
        for y in range(cy - ry, cy + ry + 1):
            dy = (y - cy) / ry
            if abs(dy) <= 1:
                half = round(rx * (1 - dy * dy) ** 0.5)
                self.rect(cx - half, y, cx + half + 1, y + 1, color)

    def line(self, points: list[tuple[int, int]], color: Color, width: int = 3) -> None:
        for (xa, ya), (xb, yb) in itertools.pairwise(points):
            steps = max(abs(xb - xa), abs(yb - ya), 1)
            for i in range(steps + 1):
                x = round(xa + (xb - xa) * i / steps)
                y = round(ya + (yb - ya) * i / steps)
                self.rect(
                    x - width // 2,
                    y - width // 2,
                    x + (width + 1) // 2,
                    y + (width + 1) // 2,
                    color,
                )

    def png(self) -> bytes:
        raw = b"".join(b"\x00" + bytes(row) for row in self.rows)

        def chunk(kind: bytes, data: bytes) -> bytes:
            body = kind + data
            return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

        header = struct.pack(">IIBBBBB", self.width, self.height, 8, 2, 0, 0, 0)
        return b"".join(
            (
                b"\x89PNG\r\n\x1a\n",
                chunk(b"IHDR", header),
                chunk(b"IDAT", zlib.compress(raw, 9)),
                chunk(b"IEND", b""),
            )
        )


def _broken_product() -> bytes:
    """A blender jug on a kitchen counter, with a crack down its side."""
    c = _Canvas(WIDTH, HEIGHT, (236, 230, 220), (200, 190, 176))
    c.rect(0, 280, WIDTH, HEIGHT, (150, 118, 88))  # the counter
    c.ellipse(240, 300, 120, 18, (120, 92, 66))  # its shadow
    c.rect(170, 250, 310, 300, (60, 60, 64))  # the motor base
    c.rect(215, 265, 265, 280, (180, 180, 186))  # the dial
    c.polygon([(150, 70), (330, 70), (300, 250), (180, 250)], (196, 222, 232))  # the jug
    c.polygon([(330, 100), (370, 110), (360, 200), (318, 190)], (170, 200, 212))  # the handle
    c.rect(140, 56, 340, 72, (80, 80, 86))  # the lid
    c.line([(232, 72), (246, 112), (228, 146), (252, 188), (238, 222), (250, 250)], (70, 70, 70))
    c.line([(228, 146), (204, 160), (196, 182)], (70, 70, 70), width=2)
    return c.png()


def _parcel() -> bytes:
    """A cardboard box with a crushed corner."""
    c = _Canvas(WIDTH, HEIGHT, (214, 220, 226), (176, 184, 192))
    c.polygon([(90, 140), (300, 140), (300, 320), (90, 320)], (190, 146, 96))  # front
    c.polygon([(300, 140), (400, 90), (400, 270), (300, 320)], (160, 120, 78))  # side
    c.polygon([(90, 140), (190, 90), (400, 90), (300, 140)], (212, 170, 118))  # top
    c.rect(180, 140, 210, 320, (222, 204, 150))  # tape
    c.polygon([(300, 140), (400, 90), (372, 150), (330, 168)], (120, 88, 56))  # the dent
    c.line([(300, 140), (330, 168), (372, 150)], (90, 64, 40), width=2)
    c.rect(110, 250, 170, 290, (250, 250, 250))  # shipping label
    return c.png()


def _receipt() -> bytes:
    """A paper receipt: a title, lines of text and a total."""
    c = _Canvas(WIDTH, HEIGHT, (92, 104, 120), (70, 80, 94))
    c.polygon([(140, 20), (350, 30), (340, 345), (130, 335)], (250, 250, 246))
    c.rect(180, 50, 300, 64, (40, 40, 40))
    for i in range(9):
        y = 90 + 22 * i
        c.rect(165, y, 200 + (i * 37) % 70, y + 7, (120, 120, 120))
        c.rect(285, y, 310, y + 7, (120, 120, 120))
    c.rect(165, 305, 230, 316, (30, 30, 30))
    c.rect(270, 305, 312, 316, (30, 30, 30))
    return c.png()


PICTURES: dict[str, Callable[[], bytes]] = {
    "broken-product.png": _broken_product,
    "parcel.png": _parcel,
    "receipt.png": _receipt,
}


@functools.cache
def picture(name: str) -> bytes:
    """The PNG bytes of one of `PICTURES` (drawn once)."""
    return PICTURES[name]()


async def _serve(request: Request) -> Response:
    name = request.path_params["name"]
    if name not in PICTURES:
        return Response(f"no picture named {name!r}\n", status_code=404, media_type="text/plain")
    return Response(
        picture(name),
        media_type="image/png",
        headers={"cache-control": "public, max-age=86400"},
    )


def media_app() -> Starlette:
    """The media host: ``GET /media/{name}`` answers a picture, 404 for any other name."""
    return Starlette(routes=[Route("/media/{name}", _serve, methods=["GET", "HEAD"])])
