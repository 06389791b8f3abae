"""The model type Wan2GP embeds in the outputs it generates, read from each file format's metadata; stdlib only.

MP4/MOV (``©cmt``), PNG (a ``comment`` text chunk), JPEG and WebP (EXIF UserComment), WAV (Wan2GP's ``json`` RIFF
chunk, LIST/INFO text), MP3 (ID3v2 COMM/TXXX) and a side-car ``<name>.json``. Each reader picks the format from the
first bytes, reads headers only and seeks over media data, with bounded reads and bounded walks: a damaged or
foreign file raises one of :data:`READ_ERRORS`, never anything else. :mod:`wangpd.usage` decides which files to read.
"""

from __future__ import annotations

import io
import json
import os
import struct
import zlib
from collections.abc import Iterator
from typing import BinaryIO

__all__ = ["READ_ERRORS", "SIDECAR_SUFFIX", "read_model_type"]

SIDECAR_SUFFIX = ".json"
_MAX_TEXT = 4 << 20  # one metadata text (Wan2GP's JSON is a few KB; prompts can be long)
_MAX_STEPS = 100_000  # boxes/chunks/frames walked in one file: a damaged file cannot spin forever


# ---- format readers --------------------------------------------------------------------------------------------
# Each reader yields the candidate texts of one file (a file may hold several comments); the first that is a JSON
# object with a "model_type" wins. They read headers and small payloads only, and seek over everything else.


class _Broken(Exception):
    """The file's structure does not hold together (truncated, sizes pointing outside it)."""


READ_ERRORS = (_Broken, OSError, ValueError, struct.error, zlib.error, EOFError)


def _read(f: BinaryIO, n: int) -> bytes:
    data = f.read(n)
    if len(data) != n:
        raise _Broken("truncated")
    return data


def _decode(raw: bytes, *encodings: str) -> str:
    for encoding in encodings:
        try:
            return raw.decode(encoding)
        except UnicodeDecodeError:
            continue
    return ""


def _model_type_of(text: str) -> str | None:
    text = text.strip().strip("\0").strip()
    if not text.startswith("{"):
        return None
    try:
        data = json.loads(text)
    except (ValueError, RecursionError):  # RecursionError: a crafted deeply nested text
        return None
    model_type = data.get("model_type") if isinstance(data, dict) else None
    return model_type.strip() if isinstance(model_type, str) and model_type.strip() else None


def read_model_type(f: BinaryIO, suffix: str, size: int) -> str | None:
    """The ``model_type`` Wan2GP stored in one output (``f`` opened binary, ``size`` its length), or None. The
    format is taken from the file's first bytes, the suffix only for side-cars and MP4/MOV without ``ftyp``.
    Raises the ``READ_ERRORS`` on a damaged file (the scanner counts it as unreadable)."""
    if suffix == SIDECAR_SUFFIX:
        return _model_type_of(_decode(f.read(_MAX_TEXT), "utf-8-sig")) if size <= _MAX_TEXT else None
    head = f.read(16)
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        texts = _png_texts(f)
    elif head.startswith(b"\xff\xd8\xff"):
        texts = _jpeg_texts(f)
    elif head[:4] == b"RIFF" and head[8:12] in (b"WEBP", b"WAVE"):
        texts = _riff_texts(f, head[8:12], min(size, struct.unpack("<I", head[4:8])[0] + 8))
    elif head[:3] == b"ID3":
        texts = _id3_texts(f, 0)
    elif head[4:8] == b"ftyp" or suffix in (".mp4", ".mov", ".m4v"):
        texts = _mp4_texts(f, size)
    else:
        return None
    for text in texts:
        model_type = _model_type_of(text)
        if model_type:
            return model_type
    return None


def _bounded_inflate(data: bytes) -> bytes | None:
    inflater = zlib.decompressobj()
    out = inflater.decompress(data, _MAX_TEXT)
    return None if inflater.unconsumed_tail else out


# MP4/MOV: moov/udta/meta/ilst/©cmt/data (what mutagen and ffmpeg write); moov may follow a huge mdat.
def _boxes(f: BinaryIO, start: int, end: int) -> Iterator[tuple[bytes, int, int]]:
    """(type, payload start, box end) of the boxes between ``start`` and ``end``; 64-bit and to-the-end sizes."""
    pos = start
    for _ in range(_MAX_STEPS):
        if pos + 8 > end:
            return
        f.seek(pos)
        size, kind = struct.unpack(">I4s", _read(f, 8))
        header = 8
        if size == 1:
            size, header = struct.unpack(">Q", _read(f, 8))[0], 16
        elif size == 0:
            size = end - pos
        if size < header or pos + size > end:
            raise _Broken(f"box {kind!r} at {pos} runs past its parent")
        yield kind, pos + header, pos + size
        pos += size


def _mp4_texts(f: BinaryIO, size: int) -> Iterator[str]:
    for kind, start, end in _boxes(f, 0, size):
        if kind != b"moov":
            continue  # mdat and the rest: seeked over
        for kind2, start2, end2 in _boxes(f, start, end):
            if kind2 != b"udta":
                continue
            for kind3, start3, end3 in _boxes(f, start2, end2):
                if kind3 == b"meta":
                    # ISO meta is a full box (4 bytes version/flags); QuickTime's is not: it starts with a box.
                    f.seek(start3)
                    peek = f.read(8)
                    children = start3 if peek[4:8] == b"hdlr" else start3 + 4
                    yield from _ilst_texts(f, children, end3)
                elif kind3 == b"\xa9cmt" and end3 - start3 <= _MAX_TEXT:
                    # QuickTime user-data text: u16 length, u16 language, text
                    f.seek(start3)
                    length = struct.unpack(">H", _read(f, 4)[:2])[0]
                    yield _decode(_read(f, min(length, end3 - start3 - 4)), "utf-8", "latin-1")


def _ilst_texts(f: BinaryIO, start: int, end: int) -> Iterator[str]:
    for kind, start2, end2 in _boxes(f, start, end):
        if kind != b"ilst":
            continue
        for item, start3, end3 in _boxes(f, start2, end2):
            if item != b"\xa9cmt":
                continue
            for kind4, start4, end4 in _boxes(f, start3, end3):
                if kind4 == b"data" and 8 <= end4 - start4 <= _MAX_TEXT + 8:
                    f.seek(start4)
                    well_known = struct.unpack(">I", _read(f, 8)[:4])[0] & 0xFFFFFF  # then 4 bytes locale
                    payload = _read(f, end4 - start4 - 8)
                    yield _decode(payload, "utf-16-be" if well_known == 2 else "utf-8")


# PNG: a tEXt/zTXt/iTXt chunk with the keyword "comment" (Wan2GP writes iTXt before the first IDAT).
def _png_texts(f: BinaryIO) -> Iterator[str]:
    f.seek(8)
    for _ in range(_MAX_STEPS):
        length, kind = struct.unpack(">I4s", _read(f, 8))
        if kind == b"IEND":
            return
        if kind not in (b"tEXt", b"zTXt", b"iTXt") or length > _MAX_TEXT:
            f.seek(length + 4, os.SEEK_CUR)  # IDAT and the rest, with their CRC
            continue
        data = _read(f, length)
        if zlib.crc32(kind + data) != struct.unpack(">I", _read(f, 4))[0]:
            continue  # a damaged text chunk: skip it, the comment may still be elsewhere
        keyword, _, rest = data.partition(b"\0")
        if keyword.lower() != b"comment" or not rest:
            continue
        if kind == b"tEXt":
            yield _decode(rest, "utf-8", "latin-1")
        elif kind == b"zTXt":
            text = _bounded_inflate(rest[1:])
            if text is not None:
                yield _decode(text, "utf-8", "latin-1")
        else:  # iTXt: compression flag, method, language\0, translated keyword\0, UTF-8 text
            compressed, body = rest[0], rest[2:]
            text = body.split(b"\0", 2)[-1] if body.count(b"\0") >= 2 else b""
            text = _bounded_inflate(text) if compressed else text
            if text is not None:
                yield _decode(text, "utf-8")


# JPEG: APP1 Exif UserComment (piexif, as Wan2GP writes it), else a COM segment. Metadata precedes the scan data.
def _jpeg_texts(f: BinaryIO) -> Iterator[str]:
    f.seek(2)
    comments: list[bytes] = []
    for _ in range(_MAX_STEPS):
        if _read(f, 1) != b"\xff":
            raise _Broken("JPEG marker expected")
        marker = _read(f, 1)[0]
        while marker == 0xFF:  # fill bytes
            marker = _read(f, 1)[0]
        if marker in (0xD9, 0xDA):  # end of image, start of scan
            break
        if 0xD0 <= marker <= 0xD7 or marker == 0x01:
            continue
        length = struct.unpack(">H", _read(f, 2))[0]
        if length < 2:
            raise _Broken("JPEG segment length")
        if marker == 0xE1:
            data = _read(f, length - 2)
            if data.startswith(b"Exif\0\0"):
                yield from _tiff_texts(data[6:])
        elif marker == 0xFE:
            comments.append(_read(f, length - 2))
        else:
            f.seek(length - 2, os.SEEK_CUR)
    for comment in comments:
        yield _decode(comment, "utf-8", "latin-1")


_TIFF_TYPE_SIZES = {1: 1, 2: 1, 3: 2, 4: 4, 5: 8, 6: 1, 7: 1, 8: 2, 9: 4, 10: 8, 11: 4, 12: 8, 13: 4}


def _tiff_texts(blob: bytes) -> Iterator[str]:
    """The UserComment (0x9286) of a TIFF/Exif block: in the Exif sub-IFD (0x8769), or misplaced in IFD0."""
    order = {b"II*\0": "<", b"MM\0*": ">"}.get(blob[:4])
    if order is None:
        return
    ifd0 = _ifd(blob, order, struct.unpack_from(order + "I", blob, 4)[0])
    ifds = [ifd0]
    if 0x8769 in ifd0:
        ifds.insert(0, _ifd(blob, order, struct.unpack(order + "I", _tiff_value(blob, order, ifd0[0x8769])[:4])[0]))
    for entries in ifds:
        if 0x9286 in entries:
            yield _user_comment(_tiff_value(blob, order, entries[0x9286]))


def _ifd(blob: bytes, order: str, offset: int) -> dict[int, tuple[int, int, int]]:
    """tag -> (type, count, offset of the value field) for one IFD."""
    if offset + 2 > len(blob):
        raise _Broken("IFD outside the Exif block")
    count = struct.unpack_from(order + "H", blob, offset)[0]
    if offset + 2 + 12 * count > len(blob):
        raise _Broken("IFD runs past the Exif block")
    entries = {}
    for index in range(count):
        pos = offset + 2 + 12 * index
        tag, kind, n = struct.unpack_from(order + "HHI", blob, pos)
        entries[tag] = (kind, n, pos + 8)
    return entries


def _tiff_value(blob: bytes, order: str, entry: tuple[int, int, int]) -> bytes:
    kind, count, field_at = entry
    size = count * _TIFF_TYPE_SIZES.get(kind, 1)
    start = field_at if size <= 4 else struct.unpack_from(order + "I", blob, field_at)[0]
    if size > _MAX_TEXT or start + size > len(blob):
        raise _Broken("Exif value outside the block")
    return blob[start : start + size]


def _user_comment(raw: bytes) -> str:
    """Exif UserComment: an 8-byte charset prefix, then the text. Wan2GP writes ``ASCII\\0\\0\\0`` or ``UNICODE\\0``
    + UTF-16LE whatever the TIFF byte order; other writers use the TIFF order, so both are tried."""
    prefix, body = raw[:8], raw[8:]
    if prefix == b"UNICODE\0":
        if body[:2] in (b"\xff\xfe", b"\xfe\xff"):
            return _decode(body, "utf-16")
        texts = [_decode(body, encoding).rstrip("\0") for encoding in ("utf-16-le", "utf-16-be")]
        return next((text for text in texts if text.lstrip().startswith("{")), texts[0])
    if prefix in (b"ASCII\0\0\0", b"\0" * 8):
        return _decode(body, "utf-8", "latin-1")
    return _decode(raw, "utf-8", "latin-1")  # no prefix (Wan2GP's reader accepts that too)


# RIFF (WebP, WAV): chunks of fourcc, u32 LE size, data padded to even. WebP keeps Exif in "EXIF"; Wan2GP puts a
# WAV's JSON in its own "json" chunk; other tools use LIST/INFO text chunks (ICMT...) or an "id3 " chunk.
def _riff_texts(f: BinaryIO, form: bytes, end: int) -> Iterator[str]:
    pos = 12
    for _ in range(_MAX_STEPS):
        if pos + 8 > end:
            return
        f.seek(pos)
        kind, length = struct.unpack("<4sI", _read(f, 8))
        if pos + 8 + length > end:
            raise _Broken(f"RIFF chunk {kind!r} runs past the file")
        if kind in (b"id3 ", b"ID3 ") and form == b"WAVE":
            yield from _id3_texts(f, pos + 8)
        elif length <= _MAX_TEXT and (kind == b"LIST" or (kind, form) in ((b"EXIF", b"WEBP"), (b"json", b"WAVE"))):
            data = _read(f, length)
            if kind == b"EXIF":
                yield from _tiff_texts(data[6:] if data.startswith(b"Exif\0\0") else data)
            elif kind == b"json":
                yield _decode(data, "utf-8", "latin-1")
            elif data[:4] == b"INFO":
                sub = 4
                while sub + 8 <= len(data):
                    sub_length = struct.unpack_from("<I", data, sub + 4)[0]
                    yield _decode(data[sub + 8 : sub + 8 + sub_length], "utf-8", "latin-1")
                    sub += 8 + sub_length + (sub_length & 1)
        pos += 8 + length + (length & 1)


# MP3: an ID3v2 tag at the start; COMM or TXXX frames (versions 2.2 to 2.4; compressed/encrypted frames skipped).
def _syncsafe(raw: bytes) -> int:
    return (raw[0] & 0x7F) << 21 | (raw[1] & 0x7F) << 14 | (raw[2] & 0x7F) << 7 | (raw[3] & 0x7F)


def _id3_texts(f: BinaryIO, start: int) -> Iterator[str]:
    f.seek(start)
    head = _read(f, 10)
    major, flags = head[3], head[5]
    if head[:3] != b"ID3" or major not in (2, 3, 4):
        return
    size = _syncsafe(head[6:10])
    src, pos, end = f, start + 10, start + 10 + size
    if flags & 0x80 and major < 4:  # whole-tag unsynchronisation
        if size > _MAX_TEXT:
            return
        body = _read(f, size).replace(b"\xff\x00", b"\xff")
        src, pos, end = io.BytesIO(body), 0, len(body)
    if flags & 0x40 and major >= 3:  # extended header
        src.seek(pos)
        raw = _read(src, 4)
        pos += struct.unpack(">I", raw)[0] + 4 if major == 3 else _syncsafe(raw)
    id_len, header = (3, 6) if major == 2 else (4, 10)
    for _ in range(_MAX_STEPS):
        if pos + header > end:
            return
        src.seek(pos)
        frame = _read(src, header)
        if frame[0] == 0:
            return  # padding
        frame_id = frame[:id_len]
        if major == 2:
            length, frame_flags = int.from_bytes(frame[3:6], "big"), 0
        else:
            length = struct.unpack(">I", frame[4:8])[0] if major == 3 else _syncsafe(frame[4:8])
            frame_flags = struct.unpack(">H", frame[8:10])[0]
        if pos + header + length > end:
            raise _Broken("ID3 frame runs past the tag")
        skipped = frame_flags & (0x00C0 if major == 3 else 0x000C)
        if frame_id in (b"COMM", b"TXXX", b"COM", b"TXX") and length <= _MAX_TEXT and not skipped:
            data = _read(src, length)
            if major == 4 and frame_flags & 0x0001:  # data length indicator
                data = data[4:]
            if major == 4 and frame_flags & 0x0002:
                data = data.replace(b"\xff\x00", b"\xff")
            text = _id3_frame_text(data, skip=3 if frame_id in (b"COMM", b"COM") else 0)
            if text:
                yield text
        pos += header + length


def _id3_frame_text(data: bytes, skip: int) -> str:
    """COMM (encoding, 3-byte language, description, text) or TXXX (encoding, description, value): the text."""
    if not data or data[0] > 3:
        return ""
    encoding = ("latin-1", "utf-16", "utf-16-be", "utf-8")[data[0]]
    rest = data[1 + skip :]
    if data[0] in (1, 2):  # two-byte terminator, aligned
        cut = next((i for i in range(0, len(rest) - 1, 2) if rest[i : i + 2] == b"\0\0"), -1)
        text = rest[cut + 2 :] if cut >= 0 else b""
    else:
        text = rest.partition(b"\0")[2]
    return _decode(text, encoding).rstrip("\0")
