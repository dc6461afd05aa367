"""Reading API request bodies: the default DRF parser (strict JSON, bounded). Chunked bodies
(no Content-Length) are given their length before Django sees them: config/wsgi.py."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from rest_framework.exceptions import ParseError
from rest_framework.parsers import JSONParser

from contacts_app import safejson
from contacts_app.api_errors import ApiError

_READ_SIZE = 64 * 1024


def read_limited(stream: Any, limit: int) -> bytes:
    """Up to `limit` bytes of `stream`; ApiError 413 when there is more."""
    chunks: list[bytes] = []
    size = 0
    while size <= limit:
        chunk = stream.read(min(_READ_SIZE, limit + 1 - size))
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
    if size > limit:
        raise ApiError(413, "payload_too_large", f"The body is larger than {limit} bytes.")
    return b"".join(chunks)


def strict_loads(raw: bytes, encoding: str) -> Any:
    """An API JSON body by safejson's rules; ApiError 400 invalid_json otherwise."""
    try:
        value = safejson.loads(raw.decode(encoding))
    except safejson.JsonRejected as exc:
        raise ApiError(400, "invalid_json", f"The body is not valid JSON: {exc}.") from None
    except ValueError:  # syntax errors, undecodable bytes
        raise ApiError(400, "invalid_json", "The body is not valid JSON.") from None
    return value


def _text_encoding(parser_context: dict) -> str:
    """The request's charset, refusing codecs that are not text (bz2_codec and the like would
    decompress a small body past every size limit)."""
    encoding = parser_context.get("encoding") or settings.DEFAULT_CHARSET
    try:
        "".encode(encoding)
    except (LookupError, UnicodeError):
        raise ParseError(f"Unsupported charset {encoding!r} in the Content-Type.") from None
    return encoding


class StrictJSONParser(JSONParser):
    """DRF's JSONParser with safejson's rules: NaN, Infinity, out-of-range numbers and deep
    nesting are a 400 saying why (never a 500 later, when jsonb refuses them); bodies are read up
    to DATA_UPLOAD_MAX_MEMORY_SIZE (413 beyond)."""

    def parse(self, stream, media_type=None, parser_context=None):
        encoding = _text_encoding(parser_context or {})
        if stream is None:
            return None
        return strict_loads(read_limited(stream, settings.DATA_UPLOAD_MAX_MEMORY_SIZE), encoding)
