"""Media generation providers: submit a job, then poll it until it gives a file.

The built-in provider needs no network: it renders a real PNG (a gradient derived from the prompt)
after `duration_ms`, so the submitted -> heartbeat -> complete cycle can be watched and tested; the
node polls it in the worker. A provider that `calls_back` (Fal.ai, workers/providers/fal.py) also
has `fetch(job, result)`: its node suspends between polls and is resumed by the provider's webhook.
The registry is workers/providers' `get_media_provider`.
"""

import hashlib
import struct
import time
import zlib
from dataclasses import dataclass


@dataclass
class MediaResult:
    content: bytes
    content_type: str
    filename: str


def png_bytes(width: int, height: int, seed: bytes) -> bytes:
    """An RGB PNG of the given size: a gradient whose colours depend on `seed`."""
    r0, g0, b0 = seed[0], seed[1], seed[2]
    rows = bytearray()
    for y in range(height):
        rows.append(0)  # filter type: none
        for x in range(width):
            rows += bytes(((r0 + x) % 256, (g0 + y) % 256, (b0 + x + y) % 256))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(bytes(rows))) + chunk(b"IEND", b"")
    )


class BuiltinMediaProvider:
    name = "builtin"
    calls_back = False

    def submit(self, request: dict) -> dict:
        """The job, as JSON kept in the checkpoint (a retried attempt polls the same job)."""
        digest = hashlib.sha256(request.get("prompt", "").encode()).hexdigest()
        return {
            "job_id": f"bmj_{digest[:16]}",
            "ready_at": time.time() + request.get("duration_ms", 2000) / 1000,
            "width": min(int(request.get("width", 256)), 2048),
            "height": min(int(request.get("height", 256)), 2048),
            "seed": digest[:6],
        }

    def poll(self, job: dict) -> MediaResult | None:
        if time.time() < job["ready_at"]:
            return None
        content = png_bytes(job["width"], job["height"], bytes.fromhex(job["seed"]))
        return MediaResult(content=content, content_type="image/png", filename=f"{job['job_id']}.png")
