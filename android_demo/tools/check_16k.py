#!/usr/bin/env python3
"""Check that the native libraries in an APK, AAB, AAR or folder support 16 KB memory pages.

Android 15+ devices may use 16 KB pages, and Google Play requires apps targeting Android 15 (targetSdk 35) to
support them. A shared library supports them when every PT_LOAD segment of its ELF file is aligned to at least
16 KB (``p_align >= 16384``: set by the linker, ``-Wl,-z,max-page-size=16384``); an APK that stores it uncompressed
(to load it in place, ``useLegacyPackaging = false``) must also start its data at a 16 KB offset in the zip (AGP 8.5.1+
does this). This script checks both, for 64-bit libraries (arm64-v8a, x86_64; 32-bit ABIs never run with 16 KB
pages), with the standard library only:

    python3 android_demo/tools/check_16k.py app/build/outputs/apk/debug/app-debug.apk
    python3 android_demo/tools/check_16k.py ~/.gradle/caches/.../litert-1.4.2.aar

Exit status 0: every 64-bit library passes; 1: at least one does not (each is listed with why); 2: nothing to check.
``--self-test`` checks the checker on synthetic libraries and archives.
"""

from __future__ import annotations

import io
import struct
import sys
import zipfile
from pathlib import Path

PAGE = 16384
ABIS_64 = ("arm64-v8a", "x86_64")
PT_LOAD = 1


def elf_load_alignments(data: bytes) -> list[int]:
    """p_align of every PT_LOAD segment of a 64-bit little-endian ELF file."""
    if data[:4] != b"\x7fELF":
        raise ValueError("not an ELF file")
    if data[4] != 2 or data[5] != 1:
        raise ValueError("not a 64-bit little-endian ELF file")
    phoff, = struct.unpack_from("<Q", data, 0x20)
    phentsize, phnum = struct.unpack_from("<HH", data, 0x36)
    aligns = []
    for i in range(phnum):
        off = phoff + i * phentsize
        p_type, = struct.unpack_from("<I", data, off)
        if p_type == PT_LOAD:
            aligns.append(struct.unpack_from("<Q", data, off + 0x30)[0])
    return aligns


def check_library(name: str, data: bytes) -> list[str]:
    """Problems of one library (empty: it supports 16 KB pages)."""
    try:
        aligns = elf_load_alignments(data)
    except (ValueError, struct.error) as e:
        return [f"{name}: {e}"]
    if not aligns:
        return [f"{name}: no PT_LOAD segment"]
    low = [a for a in aligns if a < PAGE]
    return [f"{name}: PT_LOAD aligned to {min(low)} bytes, needs >= {PAGE} (relink with "
            f"-Wl,-z,max-page-size={PAGE} or use a 16 KB-ready release)"] if low else []


def _is_64bit_lib(name: str) -> bool:
    parts = name.split("/")
    return name.endswith(".so") and any(abi in parts for abi in ABIS_64)


def check_zip(path: str, blob: bytes | None = None) -> tuple[int, list[str]]:
    """(libraries checked, problems) for an APK/AAB/AAR: ELF alignment, and for an APK the zip offset of stored ones."""
    problems, checked = [], 0
    with zipfile.ZipFile(io.BytesIO(blob) if blob is not None else path) as z:
        raw = blob if blob is not None else Path(path).read_bytes()
        is_apk = path.endswith(".apk")
        for info in z.infolist():
            if not _is_64bit_lib(info.filename):
                continue
            checked += 1
            problems += check_library(info.filename, z.read(info))
            if is_apk and info.compress_type == zipfile.ZIP_STORED:
                name_len, extra_len = struct.unpack_from("<HH", raw, info.header_offset + 26)
                data_offset = info.header_offset + 30 + name_len + extra_len
                if data_offset % PAGE:
                    problems.append(f"{info.filename}: stored at zip offset {data_offset}, not a multiple of {PAGE} "
                                    f"(zipalign -P 16, or AGP 8.5.1+)")
    return checked, problems


def check_path(path: str) -> tuple[int, list[str]]:
    p = Path(path)
    if p.is_dir():
        checked, problems = 0, []
        for f in sorted(p.rglob("*.so")):
            if _is_64bit_lib(f.as_posix()):
                checked += 1
                problems += check_library(str(f), f.read_bytes())
        return checked, problems
    if p.suffix == ".so":
        return 1, check_library(path, p.read_bytes())
    return check_zip(path)


def _synthetic_elf(align: int) -> bytes:
    """A minimal 64-bit ELF header with one PT_LOAD program header of the given alignment."""
    header = bytearray(64)
    header[:6] = b"\x7fELF\x02\x01"
    struct.pack_into("<Q", header, 0x20, 64)  # e_phoff
    struct.pack_into("<HH", header, 0x36, 56, 1)  # e_phentsize, e_phnum
    phdr = bytearray(56)
    struct.pack_into("<I", phdr, 0, PT_LOAD)
    struct.pack_into("<Q", phdr, 0x30, align)
    return bytes(header + phdr)


def _zip_with(entries: list[tuple[str, bytes]], pad_to: int | None) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for name, data in entries:
            info = zipfile.ZipInfo(name)
            info.compress_type = zipfile.ZIP_STORED
            if pad_to:  # pad the local header's extra field so the data starts at a multiple of pad_to
                start = buf.tell() + 30 + len(name.encode())
                info.extra = b"\x00" * ((-start - 4) % pad_to + 4) if (-start) % pad_to else b""
                if info.extra:
                    info.extra = struct.pack("<HH", 0xD935, len(info.extra) - 4) + info.extra[4:]
            z.writestr(info, data)
    return buf.getvalue()


def self_test() -> int:
    good, bad = _synthetic_elf(PAGE), _synthetic_elf(4096)
    assert elf_load_alignments(good) == [PAGE] and not check_library("good.so", good)
    assert "aligned to 4096" in check_library("bad.so", bad)[0]
    assert "not an ELF" in check_library("x.so", b"MZ..")[0]
    aligned = _zip_with([("lib/arm64-v8a/libgood.so", good), ("lib/armeabi-v7a/libold.so", bad)], PAGE)
    assert check_zip("a.apk", aligned) == (1, []), check_zip("a.apk", aligned)  # 32-bit ABIs are not checked
    unaligned = _zip_with([("lib/arm64-v8a/libgood.so", good)], None)
    n, problems = check_zip("u.apk", unaligned)
    assert n == 1 and any("zip offset" in p for p in problems), problems
    n, problems = check_zip("u.aar", _zip_with([("jni/arm64-v8a/libbad.so", bad)], None))
    assert n == 1 and len(problems) == 1 and "aligned to 4096" in problems[0], problems  # AAR: ELF only
    print("check_16k self-test: ok")
    return 0


def main(argv: list[str]) -> int:
    if argv == ["--self-test"]:
        return self_test()
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__)
        return 0 if argv else 2
    total, problems = 0, []
    for path in argv:
        n, p = check_path(path)
        total += n
        problems += p
    if total == 0:
        print("no 64-bit native libraries (arm64-v8a, x86_64) found", file=sys.stderr)
        return 2
    for p in problems:
        print(f"FAIL {p}")
    print(f"{total - len({p.split(':')[0] for p in problems})} of {total} 64-bit libraries support 16 KB pages")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
