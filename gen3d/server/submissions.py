"""Reading a job submission (`POST /api/jobs`) into (kind, raw options), refusing malformed input as a
`UserError` naming what is wrong: the body is read by hostile clients too, so nothing in it may reach
the handlers as a Python exception (a deeply nested array, a 5,000-digit number, a list as `kind`).
"""

from __future__ import annotations

import json

from fastapi import Request
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException

from gen3d.errors import UserError
from gen3d.server.uploads import Upload, UploadTooLarge

MAX_JSON_BYTES = 256 * 1024  # a job's options are a few lines; only an image upload is large
SUBMISSION_KEYS = ("kind", "options")


def parse_json(data: bytes | str, where: str):
    """The JSON value in `data`; UserError (or UploadTooLarge) naming `where` when it is not usable."""
    if len(data) > MAX_JSON_BYTES:
        raise UploadTooLarge(f"{where}: over the {MAX_JSON_BYTES // 1024} KiB limit for JSON")
    try:
        return json.loads(data)
    except RecursionError:
        raise UserError(f"{where}: JSON nested too deeply") from None
    except (ValueError, UnicodeDecodeError):  # JSONDecodeError, or an integer over Python's digit limit
        raise UserError(f"{where}: not valid JSON") from None


def _kind(value) -> str:
    if value is None or value == "":
        raise UserError("kind: is required")
    if not isinstance(value, str):
        raise UserError("kind: must be a string naming a job kind")
    return value


async def _read_form(request: Request) -> tuple[str, dict]:
    try:
        form = await request.form(max_files=1, max_fields=16)
    except HTTPException as exc:  # starlette's own refusals (too many files or fields, bad framing)
        raise UserError(f"request body: {exc.detail}") from None
    unknown = sorted(set(form.keys()) - {*SUBMISSION_KEYS, "image"})
    if unknown:
        raise UserError(f"{unknown[0][:60]}: unknown form field; valid: image, kind, options")
    options = form.get("options") or "{}"
    options = parse_json(options if isinstance(options, str) else "", "options")
    upload = form.get("image")
    if isinstance(upload, UploadFile) and isinstance(options, dict):
        options["image"] = Upload(upload.filename or "image", await upload.read())
    kind = form.get("kind")
    return _kind(kind if isinstance(kind, str) else None), options


async def read_submission(request: Request) -> tuple[str, dict]:
    """(kind, raw options) from a JSON body or a multipart form carrying an `image` upload."""
    content_type = request.headers.get("content-type", "")
    if content_type.startswith("multipart/form-data"):
        return await _read_form(request)
    if not content_type.startswith("application/json"):
        raise HTTPException(415, "send application/json or multipart/form-data")
    body = parse_json(await request.body(), "request body")
    if not isinstance(body, dict):
        raise UserError("request body: expected a JSON object with 'kind' and 'options'")
    unknown = sorted(set(body) - set(SUBMISSION_KEYS))
    if unknown:
        raise UserError(f"{unknown[0][:60]}: unknown key in the request body; valid: kind, options")
    options = body.get("options")
    return _kind(body.get("kind")), {} if options is None else options
