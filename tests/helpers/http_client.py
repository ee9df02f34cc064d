"""A plain HTTP client of a MONAI Label server (standard library only): multipart uploads and answers."""

from __future__ import annotations

import email.parser
import email.policy
import json
import time
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class Answer:
    status: int
    content_type: str
    body: bytes
    seconds: float = 0.0
    parts: dict[str, tuple[str | None, bytes]] = field(default_factory=dict)  # multipart: name -> (file name, bytes)

    def json(self) -> object:
        return json.loads(self.body)


def multipart(fields: dict[str, tuple[str | None, bytes]]) -> tuple[bytes, str]:
    """A ``multipart/form-data`` body of ``name -> (file name or None, content)`` and its content type."""
    boundary = uuid.uuid4().hex
    body = b""
    for name, (filename, content) in fields.items():
        disposition = f'form-data; name="{name}"' + (f'; filename="{filename}"' if filename else "")
        body += f"--{boundary}\r\nContent-Disposition: {disposition}\r\n\r\n".encode() + content + b"\r\n"
    return body + f"--{boundary}--\r\n".encode(), f"multipart/form-data; boundary={boundary}"


def file_field(path: Path) -> tuple[str, bytes]:
    return path.name, path.read_bytes()


def call(method: str, url: str, fields: dict[str, tuple[str | None, bytes]] | None = None, timeout: float = 300):
    """Send a request; returns the :class:`Answer` (HTTP errors too), a multipart answer split into its parts."""
    body, content_type = multipart(fields) if fields else (None, None)
    headers = {"Content-Type": content_type} if content_type else {}
    request = urllib.request.Request(url, data=body, method=method, headers=headers)
    started = time.perf_counter()
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            answer = Answer(response.status, response.headers.get("Content-Type", ""), response.read())
    except urllib.error.HTTPError as error:
        answer = Answer(error.code, error.headers.get("Content-Type", ""), error.read())
    answer.seconds = time.perf_counter() - started
    if answer.content_type.startswith("multipart/"):
        head = f"Content-Type: {answer.content_type}\r\n\r\n".encode()
        message = email.parser.BytesParser(policy=email.policy.default).parsebytes(head + answer.body)
        for part in message.iter_parts():
            name = part.get_param("name", header="content-disposition")
            answer.parts[name] = (part.get_filename(), part.get_payload(decode=True))
    return answer
