"""What an image input delivers, decoded once per upload.

Image events run with ``preprocess=False``: Gradio's own preprocessing would open the file with Pillow
before the handler runs, so a broken upload would fail there with a message meant for developers. Gradio
still checks that the path lies in its upload cache; ``preprocess.load_image`` decodes, with its limits
and a clear error. Direct Python calls may pass a path or bytes.
"""
from __future__ import annotations

import base64
import hashlib
import os
from functools import lru_cache

from PIL import Image

from preprocess import MAX_UPLOAD_BYTES, ImageDecodeError, load_image

from .errors import RequestError


def upload_source(payload) -> str | os.PathLike | bytes | None:
    """The uploaded file's path (or a pasted image's bytes) from an image input's payload, undecoded."""
    if payload is None or isinstance(payload, (str, os.PathLike, bytes)):
        return payload
    if not isinstance(payload, dict):
        raise RequestError("No image arrived; please upload it again.")
    url = payload.get("url") or ""
    if url.startswith("data:"):
        encoded = url.split(",", 1)[-1]
        if len(encoded) > MAX_UPLOAD_BYTES * 4 // 3 + 4:
            raise RequestError(f"Cannot use this image: it is larger than {MAX_UPLOAD_BYTES // 2**20} MB.")
        try:
            return base64.b64decode(encoded)
        except ValueError:
            raise RequestError("Cannot use this image: the pasted data is not valid base64.") from None
    if not payload.get("path"):
        raise RequestError("No image arrived; please upload it again.")
    return payload["path"]


@lru_cache(maxsize=16)
def _load_file(path: str, mtime_ns: int, size: int) -> Image.Image:
    return load_image(path)


def decode(payload) -> tuple[Image.Image, tuple]:
    """The upload as RGB, and a key that identifies its content (for caches of what is computed from it).

    One classification runs three events on the same upload (label, details, explanation), so decoded
    files are cached by path, mtime and size. Callers never modify the image. Raises ``RequestError``
    saying what is wrong with an unusable upload.
    """
    source = upload_source(payload)
    if source is None:
        raise RequestError("Please upload an image first.")
    try:
        if isinstance(source, (str, os.PathLike)) and os.path.isfile(source):
            stat = os.stat(source)
            key = ("file", str(source), stat.st_mtime_ns, stat.st_size)
            return _load_file(*key[1:]), key
        key = ("bytes", hashlib.sha256(source).hexdigest()) if isinstance(source, bytes) else ("path", str(source))
        return load_image(source), key
    except ImageDecodeError as error:
        raise RequestError(f"Cannot use this upload: {error}.", title="Not a usable image") from None
