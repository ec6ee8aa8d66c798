"""Scenario: alice sends an image, a document, a voice clip and a video; bob downloads each one.

The files are real ones made here: a PNG drawn with Pillow, a one-page PDF,
an Ogg Opus clip and a WebM VP8 video encoded with PyAV. Bob checks that every
event arrives with its content untouched and that each download returns the
uploaded bytes and content type.
"""

from __future__ import annotations

import io
import math
from fractions import Fraction

import av
from nio import DownloadError, MemoryDownloadResponse, RoomMessage, RoomSendResponse, ThumbnailResponse, UploadResponse
from PIL import Image, ImageDraw

from matrix_helpers import create_shared_room, expect, joined_timeline, sync_until


def png_image(width: int = 640, height: int = 480) -> bytes:
    image = Image.new("RGB", (width, height), (30, 90, 160))
    draw = ImageDraw.Draw(image)
    draw.rectangle((width // 4, height // 4, 3 * width // 4, 3 * height // 4), fill=(240, 200, 40))
    out = io.BytesIO()
    image.save(out, format="PNG")
    return out.getvalue()


def pdf_document() -> bytes:
    """A one-page PDF with a line of text, with a correct cross-reference table."""
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 300 144] /Contents 4 0 R "
        b"/Resources << /Font << /F1 5 0 R >> >> >>",
        None,
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
    ]
    text = b"BT /F1 18 Tf 24 72 Td (Quarterly report) Tj ET"
    objects[3] = b"<< /Length %d >>\nstream\n%s\nendstream" % (len(text), text)
    out = bytearray(b"%PDF-1.4\n")
    offsets = []
    for number, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += b"%d 0 obj\n%s\nendobj\n" % (number, body)
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    for offset in offsets:
        out += b"%010d 00000 n \n" % offset
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (len(objects) + 1, xref)
    return bytes(out)


def ogg_voice_clip(seconds: float = 1.0, rate: int = 48000) -> bytes:
    """A sine tone encoded as Opus in an Ogg container."""
    out = io.BytesIO()
    with av.open(out, mode="w", format="ogg") as container:
        stream = container.add_stream("libopus", rate=rate)
        stream.layout = "mono"
        frame_samples = 960
        total = int(seconds * rate)
        for start in range(0, total, frame_samples):
            samples = bytearray()
            for n in range(start, start + frame_samples):
                value = int(8000 * math.sin(2 * math.pi * 440 * n / rate))
                samples += value.to_bytes(2, "little", signed=True)
            frame = av.AudioFrame(format="s16", layout="mono", samples=frame_samples)
            frame.planes[0].update(bytes(samples))
            frame.sample_rate = rate
            frame.pts = start
            frame.time_base = Fraction(1, rate)
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    return out.getvalue()


def webm_video(width: int = 160, height: int = 120, frames: int = 12) -> bytes:
    """A short VP8 video of a square moving across the picture, in a WebM container."""
    out = io.BytesIO()
    with av.open(out, mode="w", format="webm") as container:
        stream = container.add_stream("libvpx", rate=12)
        stream.width = width
        stream.height = height
        stream.pix_fmt = "yuv420p"
        for index in range(frames):
            picture = Image.new("RGB", (width, height), (20, 20, 20))
            ImageDraw.Draw(picture).rectangle((index * 10, 40, index * 10 + 30, 70), fill=(200, 60, 60))
            for packet in stream.encode(av.VideoFrame.from_image(picture)):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    return out.getvalue()


async def upload(client, data: bytes, content_type: str, filename: str) -> str:
    response, _keys = await client.upload(
        io.BytesIO(data), content_type=content_type, filename=filename, filesize=len(data)
    )
    return expect(response, UploadResponse).content_uri


async def test_each_kind_of_attachment_downloads_intact(register_user):
    alice = await register_user("alice")
    bob = await register_user("bob")
    room_id = await create_shared_room(alice, bob)

    image = png_image()
    document = pdf_document()
    voice = ogg_voice_clip()
    video = webm_video()
    assert document.startswith(b"%PDF-")
    assert voice.startswith(b"OggS")
    assert video.startswith(b"\x1a\x45\xdf\xa3")

    files = {
        "m.image": (image, "image/png", "whiteboard.png"),
        "m.file": (document, "application/pdf", "Quarterly report.pdf"),
        "m.audio": (voice, "audio/ogg", "voice-note.ogg"),
        "m.video": (video, "video/webm", "demo.webm"),
    }
    uris = {kind: await upload(alice, *spec) for kind, spec in files.items()}
    contents = {
        "m.image": {
            "msgtype": "m.image",
            "body": "whiteboard.png",
            "url": uris["m.image"],
            "info": {"mimetype": "image/png", "size": len(image), "w": 640, "h": 480},
        },
        "m.file": {
            "msgtype": "m.file",
            "body": "Quarterly report.pdf",
            "filename": "Quarterly report.pdf",
            "url": uris["m.file"],
            "info": {"mimetype": "application/pdf", "size": len(document)},
        },
        "m.audio": {
            "msgtype": "m.audio",
            "body": "voice-note.ogg",
            "url": uris["m.audio"],
            "info": {"mimetype": "audio/ogg", "size": len(voice), "duration": 1000},
        },
        "m.video": {
            "msgtype": "m.video",
            "body": "demo.webm",
            "url": uris["m.video"],
            "info": {"mimetype": "video/webm", "size": len(video), "w": 160, "h": 120, "duration": 1000},
        },
    }
    sent = {}
    for kind, content in contents.items():
        response = expect(await alice.room_send(room_id, "m.room.message", dict(content)), RoomSendResponse)
        sent[response.event_id] = kind

    received: dict[str, RoomMessage] = {}

    def collect(response):
        for event in joined_timeline(response, room_id):
            if event.event_id in sent:
                received[event.event_id] = event
        return True if len(received) == len(sent) else None

    await sync_until(bob, collect, "the four attachments")

    for event_id, kind in sent.items():
        event = received[event_id]
        assert event.sender == alice.user_id
        assert event.source["content"] == contents[kind], f"{kind} content changed on the way"
        data, content_type, filename = files[kind]
        download = expect(await bob.download(mxc=contents[kind]["url"]), MemoryDownloadResponse)
        assert download.body == data, f"{kind}: downloaded bytes differ from the upload"
        assert download.content_type == content_type
        assert download.filename == filename

    thumbnail = expect(
        await bob.thumbnail(uris["m.image"].split("/")[2], uris["m.image"].split("/")[3], 96, 96), ThumbnailResponse
    )
    assert thumbnail.content_type == "image/png"
    with Image.open(io.BytesIO(thumbnail.body)) as small:
        # Scaling fits the 640x480 picture into the 96x96 box and keeps its aspect ratio.
        assert small.size == (96, 72)

    # An unknown media id is the spec's 404 for the other user too.
    missing = await bob.download(mxc=f"mxc://{uris['m.image'].split('/')[2]}/NoSuchMediaId")
    assert isinstance(missing, DownloadError)
    assert missing.status_code == "M_NOT_FOUND"
