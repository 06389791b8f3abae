"""wangpd.usage on real files: outputs built byte by byte (struct/zlib) in each format Wan2GP writes, a real
queue.zip, real folders and mtimes. The incremental scan is checked by what it reads and lists, not by its state."""

from __future__ import annotations

import contextlib
import io
import json
import os
import random
import struct
import zipfile
import zlib
from pathlib import Path

import pytest

from wangpd import output_meta, usage
from wangpd.usage import OutputScanner, hints, output_folders, read_queue, read_transformer_types


def meta(model_type: str, **extra: object) -> str:
    """The JSON Wan2GP embeds (a few of its keys; the scanner takes ``model_type``)."""
    return json.dumps(
        {
            "prompt": "a cat on a skateboard, golden hour",
            "model_type": model_type,
            "base_model_type": model_type.split("_")[0],
            "model_filename": f"ckpts/{model_type}_quanto_bf16_int8.safetensors",
            "modules": [],
            "activated_loras": [],
            **extra,
        },
        ensure_ascii=False,
    )


# ---- builders: one per format, as the writers Wan2GP uses lay the bytes out -----------------------------------


def png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_bytes(*text_chunks: bytes, after_idat: tuple[bytes, ...] = (), idat_size: int = 64) -> bytes:
    ihdr = png_chunk(b"IHDR", struct.pack(">IIBBBBB", 1, 1, 8, 2, 0, 0, 0))
    idat = png_chunk(b"IDAT", zlib.compress(b"\0\xff\0\0") + b"\0" * max(0, idat_size - 12))
    return b"\x89PNG\r\n\x1a\n" + ihdr + b"".join(text_chunks) + idat + b"".join(after_idat) + png_chunk(b"IEND", b"")


def itxt_comment(text: str, *, compressed: bool = False) -> bytes:
    # Wan2GP: b"comment\0" + flag, method, empty language, empty translated keyword, UTF-8 text
    body = zlib.compress(text.encode()) if compressed else text.encode()
    return png_chunk(b"iTXt", b"comment\0" + bytes([int(compressed), 0]) + b"\0\0" + body)


def box(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I4s", 8 + len(payload), kind) + payload


def mp4_moov(text: str) -> bytes:
    data = box(b"data", struct.pack(">II", 1, 0) + text.encode())  # type 1 = UTF-8, locale 0
    hdlr = box(b"hdlr", b"\0" * 8 + b"mdirappl" + b"\0" * 9)
    meta_box = box(b"meta", b"\0\0\0\0" + hdlr + box(b"ilst", box(b"\xa9too", b"") + box(b"\xa9cmt", data)))
    trak = box(b"trak", box(b"tkhd", b"\0" * 84) + box(b"mdia", b"\0" * 200))
    return box(b"moov", box(b"mvhd", b"\0" * 100) + trak + box(b"udta", meta_box))


def write_mp4(path: Path, text: str, *, mdat_bytes: int = 1000, sparse_mdat: int = 0) -> Path:
    """ftyp, then mdat (64-bit size), then moov at the end, as ffmpeg writes without +faststart. ``sparse_mdat``
    makes the mdat that many bytes of holes (no disk used) so only seeking can get past it in time."""
    ftyp = box(b"ftyp", b"isom\0\0\2\0isomiso2avc1mp41")
    size = sparse_mdat or mdat_bytes
    with open(path, "wb") as f:
        f.write(ftyp + struct.pack(">I4sQ", 1, b"mdat", 16 + size))
        if sparse_mdat:
            f.seek(sparse_mdat, os.SEEK_CUR)
        else:
            f.write(os.urandom(min(size, 4096)) * (size // 4096) + b"\0" * (size % 4096))
        f.write(mp4_moov(text))
    return path


def exif_tiff(comment: bytes, order: str = ">") -> bytes:
    """TIFF with IFD0 -> Exif sub-IFD -> UserComment (UNDEFINED), the layout piexif.dump gives (big-endian)."""
    header = (b"MM\0*" if order == ">" else b"II*\0") + struct.pack(order + "I", 8)
    ifd0 = struct.pack(order + "H", 1) + struct.pack(order + "HHII", 0x8769, 4, 1, 26) + struct.pack(order + "I", 0)
    exif_ifd = struct.pack(order + "H", 1) + struct.pack(order + "HHII", 0x9286, 7, len(comment), 44) + b"\0" * 4
    return header + ifd0 + exif_ifd + comment


def jpeg_bytes(comment: bytes, order: str = ">") -> bytes:
    app0 = b"\xff\xe0" + struct.pack(">H", 16) + b"JFIF\0\1\1\0\0\1\0\1\0\0"
    exif = b"Exif\0\0" + exif_tiff(comment, order)
    app1 = b"\xff\xe1" + struct.pack(">H", len(exif) + 2) + exif
    dqt = b"\xff\xdb" + struct.pack(">H", 67) + b"\0" + bytes(range(64))
    sos = b"\xff\xda" + struct.pack(">H", 8) + b"\1\1\0\0\x3f\0"
    return b"\xff\xd8" + app0 + app1 + dqt + sos + os.urandom(2000).replace(b"\xff", b"\0") + b"\xff\xd9"


def riff(form: bytes, *chunks: tuple[bytes, bytes]) -> bytes:
    body = b"".join(kind + struct.pack("<I", len(data)) + data + b"\0" * (len(data) & 1) for kind, data in chunks)
    return b"RIFF" + struct.pack("<I", 4 + len(body)) + form + body


def wav_fmt() -> tuple[bytes, bytes]:
    return b"fmt ", struct.pack("<HHIIHH", 1, 1, 16000, 32000, 2, 16)


def syncsafe(n: int) -> bytes:
    return bytes([(n >> 21) & 0x7F, (n >> 14) & 0x7F, (n >> 7) & 0x7F, n & 0x7F])


def id3_tag(*frames: bytes, major: int = 4) -> bytes:
    body = b"".join(frames) + b"\0" * 32  # padding
    return b"ID3" + bytes([major, 0, 0]) + syncsafe(len(body)) + body


def id3_frame(frame_id: bytes, data: bytes, major: int = 4) -> bytes:
    size = syncsafe(len(data)) if major == 4 else struct.pack(">I", len(data))  # v2.3 sizes are plain
    return frame_id + size + b"\0\0" + data


def write(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def scan(folder: Path, state: dict | None = None, metadata_type: str = "metadata", **kw: float) -> usage.ScanResult:
    return OutputScanner(settle_seconds=kw.pop("settle_seconds", 0), **kw).scan([folder], metadata_type, state or {})


# ---- each format ---------------------------------------------------------------------------------------------


def test_png_comment_in_itxt_text_and_ztxt_chunks(tmp_path: Path) -> None:
    out = tmp_path / "outputs"
    write(out / "itxt.png", png_bytes(png_chunk(b"tEXt", b"Software\0wan2gp"), itxt_comment(meta("flux"))))
    write(out / "itxt_z.png", png_bytes(itxt_comment(meta("qwen_image_20B"), compressed=True)))
    write(out / "text.png", png_bytes(png_chunk(b"tEXt", b"comment\0" + meta("t2v").encode())))
    write(out / "ztxt.png", png_bytes(png_chunk(b"zTXt", b"Comment\0\0" + zlib.compress(meta("i2v").encode()))))
    # after a 3 MB IDAT: the reader seeks over it
    write(out / "late.png", png_bytes(after_idat=(itxt_comment(meta("z_image")),), idat_size=3 << 20))
    result = scan(out)
    assert result.files_read == 5 and result.unreadable == 0
    assert sorted(result.used) == ["flux", "i2v", "qwen_image_20B", "t2v", "z_image"]
    assert result.used["flux"] == pytest.approx((out / "itxt.png").stat().st_mtime)


def test_mp4_comment_after_a_large_mdat(tmp_path: Path) -> None:
    out = tmp_path / "outputs"
    write_mp4(write(out / "a.mp4", b""), meta("ltx2_19B", prompt="ünïcode ✓"), mdat_bytes=3 << 20)
    write_mp4(write(out / "b.mov", b""), meta("hunyuan_1_5_t2v"), mdat_bytes=10)
    result = scan(out)
    assert result.used.keys() == {"ltx2_19B", "hunyuan_1_5_t2v"}
    assert (result.files_read, result.unreadable) == (2, 0)


def test_mp4_reader_seeks_over_a_5_gb_mdat(tmp_path: Path) -> None:
    path = write_mp4(tmp_path / "big.mp4", meta("vace_14B"), sparse_mdat=5 << 30)
    assert path.stat().st_size > 5 << 30

    class Counting(io.FileIO):
        read_bytes = 0

        def readinto(self, buffer):  # type: ignore[no-untyped-def,override]
            n = super().readinto(buffer)
            Counting.read_bytes += n or 0
            return n

    with io.BufferedReader(Counting(path, "rb")) as f:
        assert output_meta.read_model_type(f, ".mp4", path.stat().st_size) == "vace_14B"
    assert Counting.read_bytes < 64 << 10
    assert scan(tmp_path).used == {"vace_14B": pytest.approx(path.stat().st_mtime)}


def test_quicktime_style_meta_without_version_field(tmp_path: Path) -> None:
    hdlr = box(b"hdlr", b"\0" * 8 + b"mdirappl" + b"\0" * 9)
    data = box(b"data", struct.pack(">II", 1, 0) + meta("ltxv_13B").encode())
    moov = box(b"moov", box(b"udta", box(b"meta", hdlr + box(b"ilst", box(b"\xa9cmt", data)))))
    write(tmp_path / "q.mov", box(b"ftyp", b"qt  \0\0\0\0qt  ") + box(b"mdat", b"\0" * 100) + moov)
    assert set(scan(tmp_path).used) == {"ltxv_13B"}


def test_jpeg_exif_user_comment_ascii_and_unicode(tmp_path: Path) -> None:
    out = tmp_path / "outputs"
    write(out / "ascii.jpg", jpeg_bytes(b"ASCII\0\0\0" + meta("flux_dev").encode()))
    # Wan2GP falls back to UTF-16LE for non-ASCII text, inside piexif's big-endian TIFF
    write(out / "unicode_mm.jpg", jpeg_bytes(b"UNICODE\0" + meta("qwen_image_edit", prompt="猫").encode("utf-16-le")))
    write(out / "unicode_ii.jpeg", jpeg_bytes(b"UNICODE\0" + meta("chroma").encode("utf-16-le"), order="<"))
    result = scan(out)
    assert sorted(result.used) == ["chroma", "flux_dev", "qwen_image_edit"]
    assert result.unreadable == 0


def test_webp_exif_chunk(tmp_path: Path) -> None:
    vp8x = struct.pack("<I", 0x08) + b"\0\0\0\0\0\0"  # flags: EXIF present; 1x1 canvas
    exif = b"Exif\0\0" + exif_tiff(b"UNICODE\0" + meta("flux2_klein_4B", prompt="é").encode("utf-16-le"))
    write(tmp_path / "a.webp", riff(b"WEBP", (b"VP8X", vp8x), (b"VP8L", b"\x2f" + b"\0" * 20), (b"EXIF", exif)))
    write(tmp_path / "b.webp", riff(b"WEBP", (b"VP8L", b"\x2f" + b"\0" * 21), (b"EXIF", exif_tiff(b"ASCII\0\0\0x"))))
    result = scan(tmp_path)
    assert result.used.keys() == {"flux2_klein_4B"}
    assert (result.files_read, result.unreadable) == (2, 1)  # b.webp's comment is not Wan2GP's JSON


def test_wav_list_info_and_wan2gp_json_chunk(tmp_path: Path) -> None:
    samples = (b"data", b"\1\2" * 4000 + b"\3")  # odd size: the pad byte must be skipped
    info = b"INFO" + b"INAM" + struct.pack("<I", 4) + b"song" + b"ICMT"
    comment = meta("ace_step_v1").encode() + b"\0"
    info += struct.pack("<I", len(comment)) + comment + b"\0" * (len(comment) & 1)
    write(tmp_path / "info.wav", riff(b"WAVE", wav_fmt(), samples, (b"LIST", info)))
    # what Wan2GP's audio_metadata.write_wav_text_chunk appends after the samples
    write(tmp_path / "json.wav", riff(b"WAVE", wav_fmt(), samples, (b"json", meta("chatterbox").encode())))
    assert sorted(scan(tmp_path).used) == ["ace_step_v1", "chatterbox"]


def test_mp3_id3v2_comm_and_txxx(tmp_path: Path) -> None:
    frames = b"\xff\xfb\x90\x00" + b"\0" * 400  # MPEG frames follow the tag
    comm = id3_frame(b"COMM", b"\3eng" + b"desc\0" + meta("ace_step_1_5").encode())
    write(tmp_path / "v24.mp3", id3_tag(id3_frame(b"TIT2", b"\3title"), comm) + frames)
    # v2.3 has no UTF-8: UTF-16 with BOM, two-byte terminators
    value = b"\xff\xfe" + meta("heartmula").encode("utf-16-le")
    txxx = id3_frame(b"TXXX", b"\1" + b"\xff\xfem\0d\0\0\0" + value, major=3)
    write(tmp_path / "v23.mp3", id3_tag(txxx, major=3) + frames)
    result = scan(tmp_path)
    assert sorted(result.used) == ["ace_step_1_5", "heartmula"]


def test_sidecar_json(tmp_path: Path) -> None:
    write_mp4(write(tmp_path / "clip.mp4", b""), "not json")
    write(tmp_path / "clip.json", meta("i2v_2_2").encode())
    result = scan(tmp_path, metadata_type="json")
    assert result.used == {"i2v_2_2": pytest.approx((tmp_path / "clip.json").stat().st_mtime)}
    assert (result.files_read, result.unreadable) == (2, 1)  # the mp4 holds no metadata


def test_metadata_type_none_reads_nothing(tmp_path: Path) -> None:
    write(tmp_path / "a.png", png_bytes(itxt_comment(meta("flux"))))
    result = scan(tmp_path, state={"version": 1, "folders": {}}, metadata_type="none")
    assert (result.used, result.files_read, result.dirs_listed) == ({}, 0, 0)
    assert result.state == {"version": 1, "folders": {}}


def test_broken_and_foreign_files_are_counted_and_skipped(tmp_path: Path) -> None:
    good = png_bytes(itxt_comment(meta("flux")))
    write(tmp_path / "ok.png", good)
    write(tmp_path / "truncated.png", good[: good.index(b"iTXt") + 30])
    write(tmp_path / "bad_crc.png", good.replace(b'"flux"', b'"flix"'))  # the text chunk's CRC no longer matches
    write(tmp_path / "random.png", os.urandom(300))
    write(tmp_path / "empty.mp4", b"")
    write(tmp_path / "overflow.mp4", box(b"ftyp", b"isom") + struct.pack(">I4s", 10**6, b"moov") + b"\0" * 50)
    write(tmp_path / "garbage.jpg", b"\xff\xd8\xff\xe1\xff\xff" + b"\0" * 20)
    write(tmp_path / "no_model.jpg", jpeg_bytes(b"ASCII\0\0\0" + b'{"prompt": "x"}'))
    write(tmp_path / "cut.wav", riff(b"WAVE", wav_fmt(), (b"json", meta("x").encode()))[:-20])
    write(tmp_path / "bad.mp3", b"ID3\4\0\0\0\0\1\0" + b"COMM\0\0\x7f\x7f\0\0" + b"\3eng")
    write(tmp_path / "bad.json", b"{not json")
    write(tmp_path / "list.json", b"[1, 2]")
    write(tmp_path / "notes.txt", meta("t2v").encode())  # not an output suffix: not even opened
    result = scan(tmp_path)
    assert result.used.keys() == {"flux"}
    assert (result.files_read, result.unreadable) == (12, 11)
    assert result.problems == []


def test_damaged_files_never_raise(tmp_path: Path) -> None:
    samples = {
        ".png": png_bytes(itxt_comment(meta("flux"), compressed=True)),
        ".jpg": jpeg_bytes(b"UNICODE\0" + meta("chroma").encode("utf-16-le")),
        ".webp": riff(b"WEBP", (b"VP8L", b"\0" * 21), (b"EXIF", exif_tiff(b"ASCII\0\0\0" + meta("a").encode()))),
        ".wav": riff(b"WAVE", wav_fmt(), (b"data", b"\0" * 33), (b"LIST", b"INFO" + b"ICMT\1\0\0\0x\0")),
        ".mp3": id3_tag(id3_frame(b"COMM", b"\3eng\0" + meta("m").encode())) + b"\xff\xfb" + b"\0" * 50,
        ".mp4": box(b"ftyp", b"isom") + box(b"mdat", b"\0" * 50) + mp4_moov(meta("v")),
    }
    rng = random.Random(7)
    for suffix, data in samples.items():
        for _ in range(300):
            damaged = bytearray(data[: rng.randrange(1, len(data) + 1)] if rng.random() < 0.3 else data)
            for _ in range(rng.randint(0, 4)):
                damaged[rng.randrange(len(damaged))] = rng.randrange(256)
            with contextlib.suppress(*output_meta.READ_ERRORS):  # the scanner counts these as unreadable
                output_meta.read_model_type(io.BytesIO(bytes(damaged)), suffix, len(damaged))
    write(tmp_path / "nested.json", b"[" * 100_000)
    write(tmp_path / "nested.png", png_bytes(itxt_comment("{" + '"a":[' * 100_000)))
    result = scan(tmp_path)
    assert (result.files_read, result.unreadable) == (2, 2)


# ---- incremental scanning ------------------------------------------------------------------------------------


def set_mtime(path: Path, ns: int) -> None:
    os.utime(path, ns=(ns, ns))


def test_rescan_reads_nothing_and_lists_nothing_when_nothing_changed(tmp_path: Path) -> None:
    out = tmp_path / "outputs"
    for i in range(5):
        write(out / f"img_{i}.png", png_bytes(itxt_comment(meta("flux"))))
        write_mp4(write(out / "2026-01-02" / f"clip_{i}.mp4", b""), meta("t2v"))
    first = scan(out)
    assert (first.files_read, first.dirs_listed, sorted(first.used)) == (10, 2, ["flux", "t2v"])
    json.dumps(first.state)  # the caller persists it as JSON

    again = scan(out, json.loads(json.dumps(first.state)))
    assert (again.files_read, again.used) == (0, {})
    # folders untouched since the mark are not even listed (their mtime set back; in life they are simply older)
    for folder in (out, out / "2026-01-02"):
        set_mtime(folder, 1_000_000_000 * 10**9)
    quiet = scan(out, again.state)
    assert (quiet.files_read, quiet.dirs_listed) == (0, 0)

    # a new output in the dated subfolder: only that folder is listed, only that file read
    write(out / "2026-01-02" / "new.png", png_bytes(itxt_comment(meta("qwen_image_20B"))))
    third = scan(out, quiet.state)
    assert (third.files_read, third.dirs_listed, list(third.used)) == (1, 1, ["qwen_image_20B"])
    assert scan(out, third.state).files_read == 0


def test_the_folder_of_the_newest_output_is_not_listed_again(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # With coarse timestamps the folder holding the newest output has that output's time, i.e. the mark. It must
    # still not be listed on every rescan: the scans below run "an hour after" the outputs were written.
    real_time_ns = usage.time.time_ns
    monkeypatch.setattr(usage.time, "time_ns", lambda: real_time_ns() + 3600 * 10**9)
    out = tmp_path / "outputs"
    write(out / "a.png", png_bytes(itxt_comment(meta("flux"))))
    first = scan(out)
    set_mtime(out, first.state["folders"][str(out)]["mark"])
    again = scan(out, first.state)
    assert (again.files_read, again.dirs_listed) == (0, 0)


def test_new_subfolder_is_found(tmp_path: Path) -> None:
    out = tmp_path / "outputs"
    write(out / "a.png", png_bytes(itxt_comment(meta("flux"))))
    state = scan(out).state
    write(out / "2026-02-03" / "deep" / "b.png", png_bytes(itxt_comment(meta("chroma"))))
    result = scan(out, state)
    assert (result.files_read, list(result.used)) == (1, ["chroma"])


def test_a_file_at_exactly_the_mark_with_a_new_name_is_read_once(tmp_path: Path) -> None:
    out = tmp_path / "outputs"
    write(out / "a.png", png_bytes(itxt_comment(meta("flux"))))
    first = scan(out)
    write(out / "b.png", png_bytes(itxt_comment(meta("chroma"))))
    st = (out / "b.png").stat()
    # As on a file system with coarse timestamps: b.png written in the tick a.png set the mark in.
    folder = first.state["folders"][str(out)]
    folder["mark"] = max(st.st_mtime_ns, st.st_ctime_ns)
    assert folder["at_mark"] == ["a.png"]
    second = scan(out, first.state)
    assert (second.files_read, list(second.used)) == (1, ["chroma"])
    assert second.state["folders"][str(out)]["at_mark"] == ["a.png", "b.png"]
    assert scan(out, second.state).files_read == 0


def test_a_file_copied_in_with_an_old_mtime_is_read(tmp_path: Path) -> None:
    out = tmp_path / "outputs"
    write(out / "a.png", png_bytes(itxt_comment(meta("flux"))))
    state = scan(out).state
    old = write(out / "restored.png", png_bytes(itxt_comment(meta("sky_reels2"))))
    set_mtime(old, 978_307_200 * 10**9)  # 2001, as `cp -p` or a backup restore would leave it
    result = scan(out, state)
    assert result.used == {"sky_reels2": 978_307_200.0}


def test_recently_changed_files_wait_for_the_settle_time(tmp_path: Path) -> None:
    out = tmp_path / "outputs"
    write(out / "a.png", png_bytes(itxt_comment(meta("flux"))))
    write(out / "b.png", png_bytes(b""))  # written, its metadata not added yet
    early = scan(out, settle_seconds=3600)
    # Both settle; the one that already carries its model type counts at once (a model just used is kept now).
    assert (early.files_read, early.deferred, early.unreadable, early.used.keys()) == (2, 2, 0, {"flux"})
    set_mtime(out, 10**18)  # even with the folder looking unchanged, a folder with deferred files is listed again
    later = scan(out, early.state)
    assert (later.files_read, list(later.used), later.unreadable) == (2, ["flux"], 1)
    assert later.state["folders"][str(out)]["pending"] == []


def test_depth_is_bounded(tmp_path: Path) -> None:
    out = tmp_path / "outputs"
    write(out / "1" / "2" / "3" / "ok.png", png_bytes(itxt_comment(meta("flux"))))
    write(out / "1" / "2" / "3" / "4" / "too_deep.png", png_bytes(itxt_comment(meta("chroma"))))
    assert list(scan(out).used) == ["flux"]
    assert sorted(scan(out, max_depth=4).used) == ["chroma", "flux"]


def test_nested_output_folders_read_each_file_once_and_missing_ones_keep_state(tmp_path: Path) -> None:
    wan = tmp_path / "Wan2GP"
    write(wan / "outputs" / "v.png", png_bytes(itxt_comment(meta("flux"))))
    write(wan / "outputs" / "images" / "i.png", png_bytes(itxt_comment(meta("chroma"))))
    folders = output_folders(wan, {"image_save_path": "outputs/images", "audio_save_path": str(tmp_path / "gone")})
    scanner = OutputScanner(settle_seconds=0)
    first = scanner.scan(folders, "metadata", {})
    assert (first.files_read, sorted(first.used)) == (2, ["chroma", "flux"])
    kept = {
        "version": 1,
        "folders": {str(tmp_path / "gone"): {"mark": 5, "checked": 5, "at_mark": [], "dirs": [], "pending": []}},
    }
    second = scanner.scan(folders, "metadata", kept)
    assert second.state["folders"][str(tmp_path / "gone")]["mark"] == 5  # an unmounted drive is not forgotten


def test_unreadable_state_starts_over_with_a_problem(tmp_path: Path) -> None:
    write(tmp_path / "a.png", png_bytes(itxt_comment(meta("flux"))))
    result = scan(tmp_path, {"version": 99})
    assert list(result.used) == ["flux"]
    assert result.problems == ["output scan state not understood; rescanning every output folder"]
    broken = {"version": 1, "folders": {str(tmp_path): {"mark": "x"}}}
    assert scan(tmp_path, broken).files_read == 1


# ---- settings, queue, hints ----------------------------------------------------------------------------------


def test_output_folders_from_wgp_config(tmp_path: Path) -> None:
    wan = tmp_path / "Wan2GP"
    assert output_folders(wan, {}) == [wan / "outputs"]
    raw = {"save_path": "videos", "image_save_path": str(tmp_path / "pics"), "audio_save_path": "./videos/"}
    assert output_folders(wan, raw) == [wan / "videos", tmp_path / "pics"]
    assert output_folders(wan, {"save_path": "", "image_save_path": 3}) == [wan / "outputs"]


def test_transformer_types() -> None:
    assert read_transformer_types({"transformer_types": ["t2v", " i2v ", "t2v", 4, ""]}) == ["t2v", "i2v"]
    assert read_transformer_types({"transformer_types": []}) == []
    assert read_transformer_types({"transformer_types": "t2v"}) == []
    assert read_transformer_types({}) == []


def write_queue(config_dir: Path, tasks: object) -> Path:
    path = config_dir / "queue.zip"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("queue.json", json.dumps(tasks))
        archive.writestr("task1_image_start.png", png_bytes())
    return path


def test_queue_zip(tmp_path: Path) -> None:
    tasks = [
        {"id": 1, "params": {"model_type": "vace_14B", "prompt": "x"}},
        {"id": 2, "params": {"model_type": "t2v"}},
        {"id": 3, "params": {"model_type": "vace_14B"}},
        {"id": 4, "params": {"prompt": "no model"}},
    ]
    write_queue(tmp_path, tasks)
    problem = f"{tmp_path / 'queue.zip'}: 1 task(s) without params.model_type"
    assert read_queue(tmp_path) == (["vace_14B", "t2v"], [problem])
    assert read_queue(tmp_path / "elsewhere") == ([], [])


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"PK\3\4 this is not a zip", "not a readable zip"),
        (None, "no queue.json inside"),
        ({"not": "a list"}, "not a list of tasks"),
        ("{broken", "not valid JSON"),
    ],
)
def test_broken_queue_zip(tmp_path: Path, content: object, message: str) -> None:
    path = tmp_path / "queue.zip"
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        with zipfile.ZipFile(path, "w") as archive:
            if content is None:
                archive.writestr("other.json", "[]")
            else:
                archive.writestr("queue.json", content if isinstance(content, str) else json.dumps(content))
    types, problems = read_queue(tmp_path)
    assert types == []
    assert len(problems) == 1 and problems[0].startswith(str(path)) and message in problems[0]


def test_hints(tmp_path: Path) -> None:
    wan = tmp_path / "Wan2GP"
    for name in ("t2v_settings.json", "flux_settings.json", "_settings.json", "notes.txt"):
        write(wan / "settings" / name, b"{}")
    write(tmp_path / "cfg" / "settings" / "ltxv_13B_settings.json", b"{}")
    raw = {
        "last_model_type": "i2v_2_2",
        "last_model_per_family": {"wan": "i2v_2_2", "flux": "flux", "bad": 3},
        "last_model_per_type": {"t2v": "t2v_2_2"},
    }
    assert hints(tmp_path / "cfg", wan, raw) == {
        "flux": "last of its family, settings file",
        "i2v_2_2": "last model shown, last of its family",
        "ltxv_13B": "settings file",
        "t2v": "settings file",
        "t2v_2_2": "last of its type",
    }
    assert hints(wan, wan, {"last_model_per_family": "wan"}) == {"flux": "settings file", "t2v": "settings file"}
