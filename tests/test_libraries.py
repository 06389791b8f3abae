"""Other model libraries (ComfyUI, Forge, another Wan2GP): files found by size + sha256, each read at most once."""

from __future__ import annotations

import hashlib
import os
import threading
from pathlib import Path

import pytest

from wangpd.libraries import LibraryFile, LibraryIndex


def write(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def index_of(*folders: Path, **kwargs: object) -> LibraryIndex:
    index = LibraryIndex(list(folders), min_size=1, **kwargs)  # type: ignore[arg-type]
    index.scan()
    return index


def key_of(path: Path) -> tuple[int, int, int, int]:
    st = os.stat(path)
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)


def test_files_are_indexed_by_size(tmp_path: Path) -> None:
    comfy = tmp_path / "comfy" / "models"
    a = write(comfy / "checkpoints" / "a.safetensors", b"a" * 3000)
    b = write(comfy / "loras" / "deep" / "b.safetensors", b"b" * 5000)
    index = LibraryIndex([comfy], min_size=1)
    assert index.state == "idle"
    assert index.scan() == 2
    assert [c.path for c in index.candidates(3000)] == [a]
    assert [c.path for c in index.candidates(5000)] == [b]
    assert index.candidates(4000) == []
    only = index.candidates(3000)[0]
    assert isinstance(only, LibraryFile)
    assert only.key == key_of(a)
    status = index.describe()
    assert status["state"] == "ready"
    assert status["files"] == 2
    assert status["bytes_indexed"] == 8000
    assert status["folders"] == [str(comfy)]
    assert status["scanned_at"] is not None
    assert status["warnings"] == []
    assert index.files_seen == 2


def test_find_by_sha_right_and_wrong(tmp_path: Path) -> None:
    data = os.urandom(4096)
    path = write(tmp_path / "lib" / "model.safetensors", data)
    index = index_of(tmp_path / "lib")
    assert index.find(len(data), sha(data)) == path
    assert index.find(len(data), sha(data).upper()) == path  # hex case does not matter
    assert index.find(len(data), sha(b"something else")) is None
    assert index.find(len(data) + 1, sha(data)) is None  # another size is not even a candidate


def test_found_under_another_name(tmp_path: Path) -> None:
    # Wan2GP wants wan2.1_t2v_14B_bf16.safetensors; ComfyUI's copy is called something else entirely.
    data = os.urandom(6000)
    renamed = write(tmp_path / "comfy" / "diffusion_models" / "my-wan-14b.bin", data)
    write(tmp_path / "comfy" / "diffusion_models" / "wan2.1_t2v_14B_bf16.safetensors", os.urandom(6000))
    index = index_of(tmp_path / "comfy")
    assert len(index.candidates(6000)) == 2
    assert index.find(6000, sha(data)) == renamed


def test_non_matching_candidates_are_hashed_once(tmp_path: Path) -> None:
    lib = tmp_path / "lib"
    for name in ("x", "y", "z"):
        write(lib / f"{name}.bin", os.urandom(2048))
    write(lib / "other-size.bin", os.urandom(1000))
    index = index_of(lib)
    assert index.find(2048, sha(b"not here")) is None
    assert index.bytes_hashed == 3 * 2048  # the three of that size, not the other one
    assert index.describe()["hashed"] == 3
    assert index.find(2048, sha(b"still not here")) is None
    assert index.bytes_hashed == 3 * 2048  # answered from the cache


def test_changed_file_is_rehashed_not_trusted(tmp_path: Path) -> None:
    old, new = b"o" * 4000, b"n" * 4000  # same size: only the content and the mtime change
    path = write(tmp_path / "lib" / "model.bin", old)
    index = index_of(tmp_path / "lib")
    assert index.find(4000, sha(old)) == path
    before = index.candidates(4000)[0]
    path.write_bytes(new)
    os.utime(path, ns=(before.mtime_ns + 5_000_000_000, before.mtime_ns + 5_000_000_000))
    assert index.find(4000, sha(old)) is None  # the cached hash was for the old key
    assert index.find(4000, sha(new)) == path
    assert index.bytes_hashed == 2 * 4000  # read once before the change, once after
    after = index.candidates(4000)[0]
    assert after.mtime_ns == before.mtime_ns + 5_000_000_000  # the index entry follows the file
    assert after.key == key_of(path)


def test_file_that_changed_size_leaves_its_old_bucket(tmp_path: Path) -> None:
    path = write(tmp_path / "lib" / "model.bin", b"s" * 3000)
    index = index_of(tmp_path / "lib")
    path.write_bytes(b"t" * 3500)
    assert index.find(3000, sha(b"s" * 3000)) is None
    assert index.candidates(3000) == []
    assert [c.path for c in index.candidates(3500)] == [path]
    assert index.bytes_hashed == 0  # a size mismatch is known from the stat alone


def test_cached_hashes_are_used_without_reading(tmp_path: Path) -> None:
    data = os.urandom(3333)
    decoy = write(tmp_path / "comfy" / "decoy.bin", os.urandom(3333))  # walked first, so the first candidate
    path = write(tmp_path / "forge" / "m.bin", data)
    index = index_of(tmp_path / "comfy", tmp_path / "forge", hashes={key_of(path): sha(data).upper()})
    assert [c.path for c in index.candidates(3333)] == [decoy, path]
    assert index.find(3333, sha(data)) == path
    assert index.bytes_hashed == 0  # the decoy was not read either: the cached match answers first
    assert index.drain_new_hashes() == []


def test_stale_cached_hash_is_not_trusted(tmp_path: Path) -> None:
    path = write(tmp_path / "lib" / "m.bin", b"a" * 2000)
    stale_key = key_of(path)
    path.write_bytes(b"b" * 2000)
    os.utime(path, ns=(stale_key[3] + 1_000_000_000, stale_key[3] + 1_000_000_000))
    # The caller's database says this inode holds the old content, under the old mtime.
    index = index_of(tmp_path / "lib", hashes={stale_key: sha(b"a" * 2000)})
    assert index.find(2000, sha(b"a" * 2000)) is None
    assert index.bytes_hashed == 2000


def test_drain_new_hashes_once(tmp_path: Path) -> None:
    data = os.urandom(2500)
    path = write(tmp_path / "lib" / "m.bin", data)
    index = index_of(tmp_path / "lib")
    assert index.find(2500, sha(data)) == path
    assert index.drain_new_hashes() == [(key_of(path), sha(data), str(path))]
    assert index.drain_new_hashes() == []
    assert index.find(2500, sha(data)) == path  # still known in memory after the drain
    assert index.drain_new_hashes() == []


def test_missing_folder_is_a_warning(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    present = write(tmp_path / "lib" / "m.bin", b"m" * 1500)
    missing = tmp_path / "unplugged-disk" / "models"
    index = LibraryIndex([missing, tmp_path / "lib"], min_size=1)
    with caplog.at_level("WARNING", logger="wangpd.libraries"):
        assert index.scan() == 1
    assert len(index.warnings) == 1
    assert str(missing) in index.warnings[0]
    assert str(missing) in caplog.text
    assert index.describe()["warnings"] == index.warnings
    assert [c.path for c in index.candidates(1500)] == [present]


def test_unreadable_subfolder_is_a_warning(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write(tmp_path / "lib" / "ok" / "m.bin", b"m" * 1500)
    locked = tmp_path / "lib" / "locked"
    write(locked / "n.bin", b"n" * 1600)
    real_scandir = os.scandir

    def scandir(path: str) -> object:  # chmod 0 would not stop root, so the refusal is simulated
        if os.path.samefile(path, locked):
            raise PermissionError(13, "Permission denied", path)
        return real_scandir(path)

    monkeypatch.setattr(os, "scandir", scandir)
    index = index_of(tmp_path / "lib")
    monkeypatch.undo()
    assert len(index.candidates(1500)) == 1
    assert index.candidates(1600) == []
    assert len(index.warnings) == 1 and str(locked) in index.warnings[0]
    assert "Permission denied" in index.warnings[0]


def test_warnings_are_capped(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for n in range(40):
        (tmp_path / "lib" / f"d{n}").mkdir(parents=True)
    real_scandir = os.scandir

    def scandir(path: str) -> object:
        if os.path.basename(path).startswith("d"):
            raise PermissionError(13, "Permission denied", path)
        return real_scandir(path)

    monkeypatch.setattr(os, "scandir", scandir)
    index = index_of(tmp_path / "lib")
    monkeypatch.undo()
    assert len(index.warnings) == 21  # a few lines for status, not one per folder of a huge locked tree
    assert index.warnings[-1] == "more warnings left out"


def test_symlinked_directory_loop_does_not_hang(tmp_path: Path) -> None:
    lib = tmp_path / "lib"
    path = write(lib / "sub" / "m.bin", b"m" * 1200)
    (lib / "sub" / "loop").symlink_to(lib)
    (lib / "self").symlink_to(".")
    index = LibraryIndex([lib], min_size=1)
    result: list[int] = []
    worker = threading.Thread(target=lambda: result.append(index.scan()), daemon=True)
    worker.start()
    worker.join(timeout=10)
    assert not worker.is_alive(), "scan did not finish: it followed a symlinked folder"
    assert result == [1]
    assert [c.path for c in index.candidates(1200)] == [path]


def test_symlinked_file_counts_as_its_target(tmp_path: Path) -> None:
    data = os.urandom(1700)
    real = write(tmp_path / "elsewhere" / "real.bin", data)
    (tmp_path / "lib").mkdir()
    (tmp_path / "lib" / "link.safetensors").symlink_to(real)
    (tmp_path / "lib" / "dangling.bin").symlink_to(tmp_path / "nowhere")
    index = index_of(tmp_path / "lib")
    target = Path(os.path.realpath(real))  # recorded by its target, so a link made from it holds the bytes
    assert [c.path for c in index.candidates(1700)] == [target]
    assert index.find(1700, sha(data)) == target


def test_nested_folders_listed_twice_index_each_file_once(tmp_path: Path) -> None:
    models = tmp_path / "comfy" / "models"
    write(models / "checkpoints" / "a.bin", b"a" * 2100)
    write(models / "b.bin", b"b" * 2200)
    index = LibraryIndex([models / "checkpoints", models, models, tmp_path / "comfy" / "models" / "."], min_size=1)
    assert index.scan() == 2
    assert len(index.candidates(2100)) == 1
    assert len(index.candidates(2200)) == 1
    assert index.files_seen == 2  # walked once, not only deduplicated afterwards


def test_folder_reached_through_a_symlink_is_walked_once(tmp_path: Path) -> None:
    real = tmp_path / "disk2" / "models"
    write(real / "a.bin", b"a" * 2100)
    link = tmp_path / "comfy-models"
    link.symlink_to(real)
    index = LibraryIndex([link, real / ".."], min_size=1)
    assert index.scan() == 1
    assert index.files_seen == 1


def test_hardlinked_file_indexed_once(tmp_path: Path) -> None:
    data = os.urandom(2400)
    first = write(tmp_path / "comfy" / "a.bin", data)
    (tmp_path / "forge").mkdir()
    os.link(first, tmp_path / "forge" / "a-copy.bin")
    index = index_of(tmp_path / "comfy", tmp_path / "forge")
    assert index.scan() == 1
    assert len(index.candidates(2400)) == 1
    assert index.find(2400, sha(b"no")) is None
    assert index.bytes_hashed == 2400  # one inode, read once


def test_temp_and_hidden_names_skipped(tmp_path: Path) -> None:
    lib = tmp_path / "lib"
    kept = write(lib / "done.safetensors", b"k" * 1000)
    for name in ("a.incomplete", "b.part", "c.tmp", "d.wangpd-tmp", ".e.safetensors", "F.PART"):
        write(lib / name, b"x" * 1000)
    write(lib / ".cache" / "huggingface" / "download" / "g.bin", b"x" * 1000)
    index = index_of(lib)
    assert [c.path for c in index.candidates(1000)] == [kept]


def test_files_below_min_size_skipped(tmp_path: Path) -> None:
    lib = tmp_path / "lib"
    write(lib / "config.json", b"{}" * 100)
    big = write(lib / "model.bin", b"m" * 5000)
    index = LibraryIndex([lib], min_size=4096)
    assert index.scan() == 1
    assert index.candidates(200) == []
    assert [c.path for c in index.candidates(5000)] == [big]
    assert index.bytes_indexed == 5000


def test_default_min_size_is_one_mib(tmp_path: Path) -> None:
    write(tmp_path / "lib" / "small.bin", b"s" * ((1 << 20) - 1))
    write(tmp_path / "lib" / "big.bin", b"b" * (1 << 20))
    index = LibraryIndex([tmp_path / "lib"])
    assert index.scan() == 1
    assert len(index.candidates(1 << 20)) == 1


def test_prefetch_hashes_only_size_matches(tmp_path: Path) -> None:
    lib = tmp_path / "lib"
    hit = os.urandom(3000)
    hit_path = write(lib / "hit.bin", hit)
    write(lib / "miss1.bin", os.urandom(3100))
    write(lib / "miss2.bin", os.urandom(3100))
    for n in range(5):
        write(lib / f"unrelated{n}.bin", os.urandom(4000 + n))
    index = index_of(lib)
    wanted = [(3000, sha(hit)), (3100, sha(b"absent")), (9999, sha(b"no candidate"))]
    assert index.prefetch(wanted) == 3
    assert index.bytes_hashed == 3000 + 2 * 3100
    assert index.state == "ready"
    assert index.find(3000, sha(hit)) == hit_path
    assert index.find(3100, sha(b"absent")) is None
    assert index.bytes_hashed == 3000 + 2 * 3100  # the finds were answered from the cache
    assert index.prefetch(wanted) == 0


def test_prefetch_stops_at_the_first_match(tmp_path: Path) -> None:
    lib = tmp_path / "lib"
    data = os.urandom(2000)
    write(lib / "a.bin", data)
    write(lib / "b.bin", data)  # a copy (another inode): one match is enough
    write(lib / "c.bin", data)
    index = index_of(lib)
    assert index.prefetch([(2000, sha(data))]) == 1
    assert index.bytes_hashed == 2000


def test_concurrent_finds_hash_a_candidate_once(tmp_path: Path) -> None:
    data = os.urandom(1 << 20)  # big enough that the threads overlap while it is read
    path = write(tmp_path / "lib" / "m.bin", data)
    index = index_of(tmp_path / "lib")
    results: list[Path | None] = []
    barrier = threading.Barrier(8)

    def look() -> None:
        barrier.wait()
        results.append(index.find(len(data), sha(data)))

    workers = [threading.Thread(target=look) for _ in range(8)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=30)
    assert results == [path] * 8
    assert index.bytes_hashed == len(data)
    assert len(index.drain_new_hashes()) == 1


def test_vanished_candidate_is_skipped(tmp_path: Path) -> None:
    data = os.urandom(2200)
    gone = write(tmp_path / "lib" / "a.bin", data)
    kept = write(tmp_path / "lib" / "b.bin", data)
    index = index_of(tmp_path / "lib")
    gone.unlink()
    assert index.find(2200, sha(data)) == kept
    assert [c.path for c in index.candidates(2200)] == [kept]


def test_rescan_sees_new_and_removed_files(tmp_path: Path) -> None:
    lib = tmp_path / "lib"
    old = write(lib / "old.bin", b"o" * 1100)
    index = index_of(lib)
    old.unlink()
    new = write(lib / "new.bin", b"n" * 1300)
    assert index.scan() == 1
    assert index.candidates(1100) == []
    assert [c.path for c in index.candidates(1300)] == [new]
    assert index.bytes_indexed == 1300


def test_known_answers_from_cached_hashes_only_and_reads_nothing(tmp_path: Path) -> None:
    data = os.urandom(3000)
    path = write(tmp_path / "lib" / "m.bin", data)
    index = index_of(tmp_path / "lib")
    assert index.known(3000, sha(data)) is None and index.bytes_hashed == 0, "planning never hashes"
    assert index.find(3000, sha(data)) == path and index.bytes_hashed == 3000
    assert index.known(3000, sha(data).upper()) == path and index.bytes_hashed == 3000
    path.write_bytes(os.urandom(3000))
    os.utime(path, ns=(key_of(path)[3], key_of(path)[3] + 10**9))
    assert index.known(3000, sha(data)) is None, "a changed file's old hash is not trusted"
