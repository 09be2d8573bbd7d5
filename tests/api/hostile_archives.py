"""Hostile dataset zips for the upload fuzz (tests/api/test_hostile_uploads.py): contents,
member names one hostile idea at a time, links, duplicates and archive-level damage, and the
Hypothesis strategy that combines them into plausible archives with a twist or two."""

from __future__ import annotations

import io
import stat
import struct
import warnings
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path

from hypothesis import strategies as st

from tests.conftest import png_bytes

# Absolute member names the fuzz uses: outside the watched tree, so looked at one by one.
ESCAPES = (Path("/lorabox-fuzz-escape.png"), Path("/tmp/lorabox-fuzz-escape.txt"))


# --- contents ------------------------------------------------------------------------------


def _jpeg() -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (16, 8), (10, 200, 30)).save(buf, "JPEG")
    return buf.getvalue()


def _png_claiming(width: int, height: int) -> bytes:
    """A real PNG whose header claims another size (a pixel bomb, or a lie)."""
    raw = bytearray(png_bytes(8, 8))
    ihdr = raw.index(b"IHDR")
    raw[ihdr + 4 : ihdr + 12] = struct.pack(">II", width, height)
    crc = zlib.crc32(bytes(raw[ihdr : ihdr + 17]))
    raw[ihdr + 17 : ihdr + 21] = struct.pack(">I", crc)
    return bytes(raw)


PNG, JPEG = png_bytes(8, 8), _jpeg()
CONTENTS = [
    PNG,
    JPEG,
    PNG[: len(PNG) // 2],  # truncated
    JPEG[: len(JPEG) - 10],
    PNG[:8],  # a signature and nothing else
    _png_claiming(100_000, 100_000),  # a pixel bomb
    _png_claiming(0, 0),
    b"",
    b"not an image, named .png",
    b"a photo of a cat",
    b"\xef\xbb\xbfa caption after a BOM",
    b"\xff\xfeu\x00t\x00f\x00-\x001\x006\x00",  # UTF-16
    b"caf\xe9 (latin-1)",
    b"nul\x00bytes\x00inside",
    b"\xed\xa0\x80 a surrogate as UTF-8",
    b"x" * 300_000,  # one very long line
    b"PK\x03\x04 a zip inside",
]
contents = st.sampled_from(CONTENTS) | st.binary(max_size=64)


# --- member names --------------------------------------------------------------------------

# Names one hostile idea at a time: a single bad member is refused before the layout is looked
# at, so each archive is plausible members plus a twist or two. Hypothesis draws the first
# entries more often: names a dataset may well carry come first, the ones refused outright last.
TWISTS = [
    "日本_語/画像.png", "😀/😀.png", "1_a/" + "ü" * 100 + ".png", "1_Cat/a.png", "cat/a.png",
    "١٢_arabic/a.png", "²_cat/sup.png", "0_zero/a.png", "-1_neg/a.png", " 2_space /a.png",
    "99999999999999999999999_many/a.png", "1_a\\sub\\back.png", "./1_a/dot.png", "1_a/./dot.png",
    "1_a//double.png", "~/home.png", "con/aux.png", ".../a.png", "1_a/UPPER.PNG", "1_a/a.jpeg",
    "1_a/a.webp", "1_a/a.bmp", "1_a/a.caption", "1_a/a.md", "1_a/a.png ", "1_a/a.txt.",
    "1_a/.png", "1_a/.hidden.png", "1_a/._junk.png", "__MACOSX/1_a/a.png", "1_a/.DS_Store",
    "1_a/Thumbs.db", "1_a/", "1_a", "1_a/a.png/", "./", "1_a/a.png/b.png", "a/b/c/deep.png",
    "wrap/1_a/x/deep.png", "1_" + "d" * 300 + "/long.png", "1_a/" + "n" * 300 + ".png",
    "", ".", "..", "/", "1_a/a.zip", "1_a/a.tar.gz", "1_\x01/ctl.png", "1_a/nul\x00.png",
    "1_a/new\nline.png", "1_a/del\x7f.png", "../escape.png", "../../escape.txt",
    "1_a/../../escape.png", "1_a/../b.png", "..\\evil.png", str(ESCAPES[0]), str(ESCAPES[1]),
    "C:/drive.png", "C:\\drive.png", "\\\\server\\share\\x.png",
]  # fmt: skip
PLAIN = ["1_cat/a.png", "1_cat/a.txt", "1_cat/b.jpg", "1_cat/b.txt", "2_dog/c.png", "c.png"]
names = st.sampled_from(TWISTS) | st.text(max_size=12).map(lambda t: f"1_a/{t}.png")


@dataclass(frozen=True)
class Member:
    name: str
    data: bytes
    compression: int = zipfile.ZIP_DEFLATED
    symlink: bool = False


compressions = st.sampled_from([zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED, zipfile.ZIP_BZIP2])
good_contents = st.sampled_from([PNG, JPEG, b"a cat", b"\xef\xbb\xbfa dog, after a BOM"])
plain_members = st.builds(Member, st.sampled_from(PLAIN), good_contents, compressions)
TWIST_KINDS = ["name", "content", "link", "duplicate", "damage"]
CONTENT_NAMES = ["1_cat/x.png", "1_cat/x.txt", "2_dog/y.jpg", "2_dog/y.caption", "z.webp"]


def build_zip(entries: list[Member]) -> bytes:
    buf = io.BytesIO()
    with warnings.catch_warnings(), zipfile.ZipFile(buf, "w") as zf:
        warnings.simplefilter("ignore")  # duplicate names are the point
        for m in entries:
            info = zipfile.ZipInfo(m.name)
            info.compress_type = m.compression
            if m.symlink:
                info.external_attr = (stat.S_IFLNK | 0o777) << 16
            zf.writestr(info, m.data)
    return buf.getvalue()


# --- archive-level damage ------------------------------------------------------------------


def _central_entries(raw: bytes) -> list[int]:
    """Offsets of the central-directory file headers."""
    found, start = [], 0
    while (i := raw.find(b"PK\x01\x02", start)) != -1:
        found.append(i)
        start = i + 4
    return found


def lie_about_size(raw: bytes, size: int) -> bytes:
    """Every central-directory entry declares ``size`` uncompressed bytes."""
    out = bytearray(raw)
    for cd in _central_entries(raw):
        out[cd + 24 : cd + 28] = struct.pack("<I", size)
    return bytes(out)


def invalid_utf8_name(raw: bytes) -> bytes:
    """The first entry is flagged UTF-8 but its name starts with a byte UTF-8 never has."""
    out = bytearray(raw)
    for cd in _central_entries(raw)[:1]:
        out[cd + 9] |= 0x08  # general-purpose flag bit 11 (0x0800): the name is UTF-8
        if struct.unpack("<H", raw[cd + 28 : cd + 30])[0]:  # the name's length
            out[cd + 46] = 0xFF
    return bytes(out)


@st.composite
def damaged(draw: st.DrawFn, raw: bytes) -> bytes:
    how = draw(st.sampled_from(["truncate", "flip", "lie", "utf8", "wrap"]))
    if how == "truncate":
        return raw[: draw(st.integers(0, max(len(raw) - 1, 0)))]
    if how == "flip":
        out = bytearray(raw)
        cd = raw.rfind(b"PK\x01\x02")
        low = cd if cd > 0 and draw(st.booleans()) else 0
        for _ in range(draw(st.integers(1, 4))):
            if len(out) > low:
                out[draw(st.integers(low, len(out) - 1))] = draw(st.integers(0, 255))
        return bytes(out)
    if how == "lie":
        return lie_about_size(raw, draw(st.sampled_from([0, 1, 3_000_000_000, 0xFFFFFFFF])))
    if how == "utf8":
        return invalid_utf8_name(raw)
    # "wrap": junk before and after (a self-extractor's stub, trailing garbage)
    return draw(st.binary(max_size=32)) + raw + draw(st.binary(max_size=32))


@st.composite
def archives(draw: st.DrawFn) -> bytes:
    """A plausible dataset with up to two twists, each one hostile idea (none: a clean one)."""
    entries = draw(st.lists(plain_members, max_size=4, unique_by=lambda m: m.name))
    twists = draw(st.lists(st.sampled_from(TWIST_KINDS), max_size=2))
    for twist in twists:
        if twist == "name":
            entries.append(Member(draw(names), draw(good_contents), draw(compressions)))
        elif twist == "content":
            entries.append(Member(draw(st.sampled_from(CONTENT_NAMES)), draw(contents)))
        elif twist == "link":
            entries.append(Member(draw(st.sampled_from(CONTENT_NAMES)), PNG, symlink=True))
        elif twist == "duplicate" and entries:
            entries.append(draw(st.sampled_from(entries)))
    raw = build_zip(draw(st.permutations(entries)))
    return draw(damaged(raw)) if "damage" in twists else raw
