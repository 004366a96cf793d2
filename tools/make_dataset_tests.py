#!/usr/bin/env python3
"""Writes tests/data/datasets: tiny training sets in each layout that
src/data/dataset*.c scans (imagefolder with/without metadata.jsonl, kohya
captions, DreamBooth instance/class dirs, and broken metadata files).
Images are small gradients so crops and flips are visible in tests."""
import json
import os
import shutil

from PIL import Image

ROOT = os.path.join(os.path.dirname(__file__), "..", "tests", "data", "datasets")


def img(path, w, h, fmt=None):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    im = Image.new("RGB", (w, h))
    # Distinct, position-dependent pixels: a flip or a shifted crop changes them.
    im.putdata([((x * 255) // max(w - 1, 1), (y * 255) // max(h - 1, 1), (x * 7 + y * 13) % 256)
                for y in range(h) for x in range(w)])
    im.save(path, fmt, **({"quality": 90} if fmt == "JPEG" else {}))


def text(path, s):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(s.encode("utf-8"))


def main():
    shutil.rmtree(ROOT, ignore_errors=True)
    # imagefolder with metadata.jsonl: lines out of path order, a blank line,
    # a list-valued caption, and a second column ("alt").
    d = os.path.join(ROOT, "imagefolder")
    img(f"{d}/b.png", 40, 24)
    img(f"{d}/a.jpg", 24, 40, "JPEG")
    img(f"{d}/sub/c.png", 16, 16)
    img(f"{d}/unlisted.png", 8, 8)  # not in metadata: not an item
    meta = [
        {"file_name": "b.png", "text": "a wide gradient", "alt": "B"},
        {"file_name": "sub/c.png", "text": ["first caption", "second"], "alt": "C"},
        {"file_name": "a.jpg", "text": "caf\u00e9 \u2615 \u732b", "alt": "A"},
    ]
    text(f"{d}/metadata.jsonl", json.dumps(meta[0]) + "\n\n" + "\n".join(json.dumps(m) for m in meta[1:]) + "\n")

    # imagefolder without metadata: recursive, non-images and hidden files skipped.
    d = os.path.join(ROOT, "imagefolder_plain")
    img(f"{d}/z.png", 8, 8)
    img(f"{d}/Y.JPEG", 12, 8, "JPEG")
    img(f"{d}/sub/deeper/x.png", 8, 12)
    img(f"{d}/.hidden.png", 8, 8)
    text(f"{d}/notes.txt", "not an image\n")

    # kohya: .txt (UTF-8, trailing newline, second line ignored), .caption, none.
    d = os.path.join(ROOT, "kohya")
    img(f"{d}/one.png", 32, 16)
    text(f"{d}/one.txt", "  a photo of sks dog, \u00e9t\u00e9 \U0001F436  \nsecond line ignored\n")
    img(f"{d}/two.jpg", 16, 32, "JPEG")
    text(f"{d}/two.caption", "\ufeffcaption file\r\n")
    img(f"{d}/three.png", 8, 8)

    # DreamBooth: instance and class dirs.
    d = os.path.join(ROOT, "dreambooth")
    img(f"{d}/instance/i1.png", 16, 16)
    img(f"{d}/instance/i0.jpg", 24, 16, "JPEG")
    img(f"{d}/instance/sub/nested.png", 8, 8)  # not read: iterdir is flat
    img(f"{d}/class/c0.png", 16, 16)

    # Broken metadata files: the error must name the line.
    for name, lines in {
        "bad_json": ['{"file_name": "a.png", "text": "ok"}', "", '{"file_name": "a.png", "text": '],
        "bad_column": ['{"file_name": "a.png", "text": "ok"}', '{"file_name": "a.png", "caption": "x"}'],
        "bad_file": ['{"file_name": "a.png", "text": "ok"}', '{"file_name": "missing.png", "text": "x"}'],
    }.items():
        d = os.path.join(ROOT, name)
        img(f"{d}/a.png", 8, 8)
        text(f"{d}/metadata.jsonl", "\n".join(lines) + "\n")

    # An image that does not decode.
    d = os.path.join(ROOT, "corrupt")
    os.makedirs(d)
    with open(f"{d}/broken.png", "wb") as f:  # a PNG signature, then garbage
        f.write(b"\x89PNG\r\n\x1a\n" + b"\x00\x00\x00\x0dIHDR not really")


if __name__ == "__main__":
    main()
