"""The images of one chat-completions request: where they are, their bytes, their pixels.

Everything here fails closed: a request whose images cannot all be found, fetched, decoded and
checked raises :class:`Rejected` (an HTTP status and an OpenAI-style error naming the message
and the content part), and the proxy forwards nothing. Content parts it does not know (audio,
files, ``video_url``, ...) are refused rather than passed on, since they could carry what the
anonymizer never saw.
"""

from __future__ import annotations

import base64
import binascii
import io
from dataclasses import dataclass
from typing import Any

import aiohttp
import cv2
import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

TEXT_PARTS = frozenset({"text", "refusal"})
"""Content parts passed on untouched."""
DECODED_FORMATS = ("JPEG", "PNG", "WEBP", "GIF", "BMP")
"""What Pillow may decode (the formats OpenAI takes, and BMP): none of its other decoders, some
of which run external programs, is reached with a client's bytes."""


class Rejected(Exception):
    """A request the proxy will not forward, as the HTTP error the client gets.

    Args:
        status: the HTTP status (4xx: the request's fault; the upstream is never contacted).
        message: what is wrong, for a person.
        code: a stable machine-readable reason (also the metrics label).
        param: where, e.g. ``messages[2].content[1]``.
    """

    def __init__(self, status: int, message: str, code: str, param: str | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.code, self.param = status, message, code, param

    def payload(self) -> dict[str, Any]:
        """The body OpenAI's API answers errors with, so clients raise their usual exceptions."""
        kind = "invalid_request_error" if self.status < 500 else "proxy_error"
        return {
            "error": {"message": self.message, "type": kind, "param": self.param, "code": self.code}
        }


@dataclass
class ImagePart:
    """One ``image_url`` content part; :attr:`slot` is the dict whose ``url`` is replaced."""

    message: int
    part: int
    slot: dict[str, Any]

    @property
    def where(self) -> str:
        return f"messages[{self.message}].content[{self.part}]"

    @property
    def url(self) -> str:
        return self.slot["url"]


def find_images(body: Any) -> list[ImagePart]:
    """Every image of a chat-completions request body, after checking that every content part
    is one the proxy knows: text (left as is) or ``image_url`` (anonymized)."""
    if not isinstance(body, dict) or not isinstance(body.get("messages"), list):
        raise Rejected(400, "the body must be a JSON object with a 'messages' list", "bad_request")
    images = []
    for i, message in enumerate(body["messages"]):
        if not isinstance(message, dict):
            raise Rejected(400, f"messages[{i}] is not an object", "bad_request", f"messages[{i}]")
        content = message.get("content")
        if content is None or isinstance(content, str):
            continue
        if not isinstance(content, list):
            where = f"messages[{i}].content"
            raise Rejected(
                400, f"{where} must be a string or a list of parts", "bad_request", where
            )
        for j, part in enumerate(content):
            where = f"messages[{i}].content[{j}]"
            kind = part.get("type") if isinstance(part, dict) else None
            if kind in TEXT_PARTS:
                continue
            if kind != "image_url":
                hint = (
                    ": send a video as its frames, one image_url part each (they are anonymized "
                    "as one batch)"
                    if kind == "video_url"
                    else ""
                )
                raise Rejected(
                    400,
                    f"{where}: content part of type {kind!r} is not forwarded; the privacy proxy "
                    f"passes text and anonymizes image_url parts, and forwards nothing else{hint}",
                    "unsupported_content",
                    where,
                )
            slot = part.get("image_url")
            if not isinstance(slot, dict) or not isinstance(slot.get("url"), str):
                raise Rejected(
                    400, f"{where}: image_url must be an object with a 'url' string", "bad_request",
                    where,
                )  # fmt: skip
            images.append(ImagePart(i, j, slot))
    return images


def data_url_bytes(part: ImagePart, max_bytes: int) -> bytes:
    """The bytes of a ``data:image/...;base64,`` URL."""
    header, comma, payload = part.url.partition(",")
    if not (comma and header.startswith("data:") and header.endswith(";base64")):
        raise Rejected(
            400, f"{part.where}: expected a base64 data URL or an http(s) URL, got "
            f"{part.url[:30]!r}...", "bad_image_url", part.where,
        )  # fmt: skip
    if len(payload) * 3 // 4 > max_bytes:
        raise _too_many_bytes(part, len(payload) * 3 // 4, max_bytes)
    try:
        return base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError) as error:
        raise Rejected(
            400, f"{part.where}: the image's base64 is invalid ({error})", "image_undecodable",
            part.where,
        ) from error  # fmt: skip


async def fetch_bytes(
    session: aiohttp.ClientSession, part: ImagePart, max_bytes: int, timeout_s: float
) -> bytes:
    """The bytes at an http(s) image URL, at most ``max_bytes`` within ``timeout_s``. The
    session must carry no credentials: the client's key is for the upstream, not image hosts."""
    try:
        timeout = aiohttp.ClientTimeout(total=timeout_s)
        async with session.get(part.url, timeout=timeout, max_redirects=3) as response:
            if response.status != 200:
                raise Rejected(
                    400, f"{part.where}: fetching the image gave HTTP {response.status}",
                    "image_fetch_failed", part.where,
                )  # fmt: skip
            if (response.content_length or 0) > max_bytes:
                raise _too_many_bytes(part, response.content_length or 0, max_bytes)
            data = bytearray()
            async for chunk in response.content.iter_chunked(1 << 16):
                data += chunk
                if len(data) > max_bytes:
                    raise _too_many_bytes(part, len(data), max_bytes)
            return bytes(data)
    except TimeoutError as error:
        raise Rejected(
            400, f"{part.where}: the image URL did not answer within {timeout_s:g} s",
            "image_fetch_failed", part.where,
        ) from error  # fmt: skip
    except aiohttp.ClientError as error:
        raise Rejected(
            400, f"{part.where}: cannot fetch the image ({type(error).__name__}: {error})",
            "image_fetch_failed", part.where,
        ) from error  # fmt: skip


def decode_image(data: bytes, part: ImagePart, max_pixels: int) -> tuple[np.ndarray, str]:
    """uint8 ``H × W × 3`` RGB pixels (EXIF orientation applied, as a viewer shows them) and
    the format to send the anonymized image in: ``"JPEG"`` for a JPEG, else lossless
    ``"PNG"``. The size is checked from the header, before any pixel is decoded; a
    truncated or corrupt file is an error, never a partly grey image."""
    try:
        image = Image.open(io.BytesIO(data), formats=DECODED_FORMATS)
        width, height = image.size
        if width * height > max_pixels:
            raise Image.DecompressionBombError(f"{width}×{height} = {width * height:,} pixels")
        if getattr(image, "n_frames", 1) > 1:
            raise Rejected(
                422, f"{part.where}: an animated {image.format} has {image.n_frames} frames; send "
                "them as separate image_url parts", "image_animated", part.where,
            )  # fmt: skip
        fmt = "JPEG" if image.format == "JPEG" else "PNG"  # a photo stays a compact JPEG
        image.load()
        image = ImageOps.exif_transpose(image).convert("RGB")
    except Image.DecompressionBombError as error:  # Pillow's own guard may fire first
        raise Rejected(
            413, f"{part.where}: the image is too large ({error}); the proxy takes at most "
            f"{max_pixels:,} pixels (--max-pixels)", "image_too_large", part.where,
        ) from error  # fmt: skip
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as error:
        raise Rejected(
            400, f"{part.where}: the image cannot be decoded ({type(error).__name__}: {error})",
            "image_undecodable", part.where,
        ) from error  # fmt: skip
    return np.array(image), fmt  # a writable copy: torch.from_numpy takes it as is


def encode_image(pixels: np.ndarray, fmt: str, jpeg_quality: int = 95) -> str:
    """uint8 RGB pixels as a base64 data URL, with no metadata (EXIF, GPS) of the original."""
    bgr = np.ascontiguousarray(pixels[..., ::-1])
    if fmt == "JPEG":
        ok, encoded = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, jpeg_quality])
        mime = "image/jpeg"
    else:
        ok, encoded = cv2.imencode(".png", bgr, [cv2.IMWRITE_PNG_COMPRESSION, 1])
        mime = "image/png"
    if not ok:
        raise RuntimeError(f"OpenCV cannot encode a {pixels.shape} image as {fmt}")
    return f"data:{mime};base64,{base64.b64encode(encoded.tobytes()).decode()}"


def _too_many_bytes(part: ImagePart, size: int, max_bytes: int) -> Rejected:
    return Rejected(
        413, f"{part.where}: the image is {size:,} bytes, over the proxy's limit of {max_bytes:,} "
        "(--max-image-mb)", "image_too_large", part.where,
    )  # fmt: skip
