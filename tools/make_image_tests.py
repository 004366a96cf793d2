#!/usr/bin/env python3
"""Golden data for tests/test_image_decode.c (run from the repository root).

Writes tests/data/images/: small PNG/JPEG/WebP files made with PIL, a few
broken ones, and expected.safetensors with
  dec/<file>   uint8 [h, w, 3]  PIL: Image.open(file).convert("RGB")
  exif/<file>  uint8 [h, w, 3]  PIL: ImageOps.exif_transpose(...).convert("RGB")
  rs/<n>       uint8 [oh, ow, 3] PIL: Image.resize((ow, oh), BILINEAR)
  t<n>/out     float32 [3, 32, 32] diffusers' train transform (see CASES)
  t<n>/geom    int32 [6]  resized w, h, crop top, left, center top, left

The train transform is torchvision's Resize(32, BILINEAR) -> CenterCrop(32)
or crop at (top, left) -> optional horizontal flip -> ToTensor -> Normalize
([0.5], [0.5]). torchvision is not required: on a PIL image Resize is
PIL's resize with torchvision's size rule, and ToTensor/Normalize are the
torch ops below (the same float32 ops torchvision runs)."""
import io
import json
import os
import struct
import zlib

import numpy as np
import torch
from PIL import Image, ImageOps
from safetensors.numpy import save_file

OUT = "tests/data/images"
rng = np.random.default_rng(1234)


def photo(w, h, seed):
    """A smooth colour field with texture and hard edges (exercises IDCT,
    chroma upsampling and the resampler better than flat colour)."""
    r = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w].astype(np.float64)
    img = np.stack([
        128 + 100 * np.sin(x / 5.0 + seed) * np.cos(y / 7.0),
        128 + 90 * np.cos((x + y) / 6.0),
        255 * (x / max(w - 1, 1)) * (y / max(h - 1, 1)),
    ], -1)
    img += r.normal(0, 18, img.shape)
    img[h // 3:h // 2, w // 4:w // 2] = [250, 20, 40]  # a hard-edged block
    return np.clip(img, 0, 255).astype(np.uint8)


def png16(path, arr):
    """A 16-bit RGB PNG (PIL cannot write one)."""
    h, w, _ = arr.shape
    raw = b"".join(b"\0" + arr[y].astype(">u2").tobytes() for y in range(h))

    def chunk(t, d):
        return struct.pack(">I", len(d)) + t + d + struct.pack(">I", zlib.crc32(t + d))

    with open(path, "wb") as f:
        f.write(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 16, 2, 0, 0, 0)) +
                chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))


def over_white(im):
    """RGB with any transparency composited on white, in sdc's integer form
    round((c*a + 255*(255 - a)) / 255) (src/data/image.c)."""
    has_alpha = im.mode in ("RGBA", "LA", "PA") or "transparency" in im.info
    if not has_alpha:
        return np.ascontiguousarray(np.asarray(im.convert("RGB")))
    rgba = np.asarray(im.convert("RGBA")).astype(np.uint32)
    a = rgba[..., 3:4]
    out = (rgba[..., :3] * a + 255 * (255 - a) + 127) // 255
    return np.ascontiguousarray(out.astype(np.uint8))


def main():
    os.makedirs(OUT, exist_ok=True)
    for f in os.listdir(OUT):
        os.remove(os.path.join(OUT, f))
    files = {}
    base = photo(37, 29, 1)  # odd sizes: partial MCUs and edge upsampling
    rgba = np.concatenate([base, rng.integers(0, 256, base.shape[:2] + (1,), dtype=np.uint8)], -1)
    rgba[0:5, 0:5, 3] = 0  # fully transparent corner: colour must survive

    def save(name, im, **kw):
        im.save(os.path.join(OUT, name), **kw)
        files[name] = True

    # PNG
    save("rgb.png", Image.fromarray(base))
    save("rgba.png", Image.fromarray(rgba, "RGBA"))
    save("gray.png", Image.fromarray(base[..., 1]))
    pal = Image.fromarray(base).quantize(16)
    save("palette.png", pal)
    g16 = (base[..., 0].astype(np.uint16) * 257 + rng.integers(0, 257, base.shape[:2])).astype(np.uint16)
    save("gray16.png", Image.fromarray(g16))
    png16(os.path.join(OUT, "rgb16.png"), base.astype(np.uint16) * 257 + rng.integers(0, 257, base.shape).astype(np.uint16))
    files["rgb16.png"] = True
    # JPEG
    im = Image.fromarray(base)
    save("q90_444.jpg", im, quality=90, subsampling=0)
    save("q75_420.jpg", im, quality=75, subsampling=2)
    save("q80_422.jpg", im, quality=80, subsampling=1)
    save("progressive.jpg", im, quality=85, progressive=True, subsampling=2)
    save("gray.jpg", Image.fromarray(base[..., 1]), quality=85)
    save("cmyk.jpg", im.convert("CMYK"), quality=90)
    save("jpeg_named.png", im, format="JPEG", quality=70)  # sniffed by content
    # WebP
    save("lossy.webp", im, quality=80)
    save("lossless.webp", im, lossless=True)
    save("lossy_alpha.webp", Image.fromarray(rgba, "RGBA"), quality=80)
    save("lossless_alpha.webp", Image.fromarray(rgba, "RGBA"), lossless=True, exact=True)
    # EXIF orientations (JPEG), 12x8 with a marked corner
    small = photo(12, 8, 3)
    small[0:2, 0:3] = [255, 255, 255]
    exif_files = []
    for o in range(1, 9):
        ex = Image.Exif()
        ex[0x0112] = o
        name = f"exif{o}.jpg"
        save(name, Image.fromarray(small), quality=95, subsampling=0, exif=ex.tobytes())
        exif_files.append(name)

    # broken files
    data = open(os.path.join(OUT, "q75_420.jpg"), "rb").read()
    open(os.path.join(OUT, "truncated.jpg"), "wb").write(data[:len(data) // 2])
    data = open(os.path.join(OUT, "lossy.webp"), "rb").read()
    open(os.path.join(OUT, "truncated.webp"), "wb").write(data[:len(data) - 40])
    # IHDR claiming 100000 x 100000, then the start of an IDAT (libpng reads
    # the header up to the first IDAT before the size can be checked)
    ihdr = b"IHDR" + struct.pack(">IIBBBBB", 100000, 100000, 8, 2, 0, 0, 0)
    idat = b"IDAT" + zlib.compress(b"\0" * 64)
    open(os.path.join(OUT, "huge.png"), "wb").write(
        b"\x89PNG\r\n\x1a\n" + struct.pack(">I", 13) + ihdr + struct.pack(">I", zlib.crc32(ihdr)) +
        struct.pack(">I", len(idat) - 4) + idat + struct.pack(">I", zlib.crc32(idat)))
    # a JPEG whose SOF claims 20000 x 20000 (the scan data is for 37 x 29)
    j = bytearray(open(os.path.join(OUT, "q90_444.jpg"), "rb").read())
    sof = j.find(b"\xff\xc0")
    j[sof + 5:sof + 9] = struct.pack(">HH", 20000, 20000)
    open(os.path.join(OUT, "huge.jpg"), "wb").write(bytes(j))
    open(os.path.join(OUT, "not_image.png"), "wb").write(b"GIF89a this is not a png at all\n")

    tensors = {}
    for name in files:
        with Image.open(os.path.join(OUT, name)) as im:
            tensors["dec/" + name] = over_white(im)
    for name in exif_files:
        with Image.open(os.path.join(OUT, name)) as im:
            tensors["exif/" + name] = np.ascontiguousarray(np.asarray(ImageOps.exif_transpose(im).convert("RGB")))

    # resampler alone: down by large/odd factors, up, one axis only
    src = photo(61, 45, 5)
    tensors["rs/src"] = src  # stored so the test needs no decoder
    for i, (ow, oh) in enumerate([(17, 13), (30, 45), (61, 20), (100, 77), (7, 90)]):
        tensors[f"rs/{i}"] = np.asarray(Image.fromarray(src).resize((ow, oh), Image.BILINEAR))

    # train transform cases: file, center_crop, top, left, flip (res 32)
    cases = [("q75_420.jpg", 1, 0, 0, 0), ("q75_420.jpg", 0, 0, 5, 1), ("rgb16.png", 0, 0, 3, 0),
             ("portrait.png", 1, 0, 0, 1), ("portrait.png", 0, 17, 0, 0), ("small.png", 1, 0, 0, 0)]
    Image.fromarray(photo(45, 70, 7)).save(os.path.join(OUT, "portrait.png"))
    Image.fromarray(photo(20, 27, 8)).save(os.path.join(OUT, "small.png"))  # upscaled
    res = 32
    meta = {}
    for i, (name, center, top, left, flip) in enumerate(cases):
        img = Image.open(os.path.join(OUT, name)).convert("RGB")
        w, h = img.size
        short, long = (w, h) if w <= h else (h, w)
        new_long = int(res * long / short)  # torchvision _compute_resized_output_size
        nw, nh = (res, new_long) if w <= h else (new_long, res)
        img = img.resize((nw, nh), Image.BILINEAR)
        ct, cl = int(round((nh - res) / 2.0)), int(round((nw - res) / 2.0))
        if center:
            top, left = ct, cl
        img = img.crop((left, top, left + res, top + res))
        if flip:
            img = img.transpose(Image.FLIP_LEFT_RIGHT)
        t = torch.from_numpy(np.array(img, copy=True)).permute(2, 0, 1).contiguous()
        t = t.to(torch.float32).div(255)
        mean = torch.as_tensor([0.5]).view(-1, 1, 1)
        t = t.sub_(mean).div_(mean)
        tensors[f"t{i}/out"] = t.numpy()
        tensors[f"t{i}/geom"] = np.array([nw, nh, top, left, ct, cl], np.int32)
        meta[f"t{i}"] = json.dumps({"file": name, "center_crop": center, "top": top, "left": left, "flip": flip})
    save_file(tensors, os.path.join(OUT, "expected.safetensors"), metadata=meta)

    # a palette PNG with one transparent entry (tRNS); test_image_decode.c
    # holds its expected first row
    pal = Image.new("P", (5, 3))
    pal.putpalette([255, 0, 0, 0, 255, 0, 0, 0, 255] + [0] * 759)
    pal.putdata([0, 1, 2, 0, 1, 2, 0, 1, 2, 0, 1, 2, 0, 1, 2])
    pal.save(os.path.join(OUT, "palette_trns.png"), transparency=1)
    total = sum(os.path.getsize(os.path.join(OUT, f)) for f in os.listdir(OUT))
    print(f"wrote {len(os.listdir(OUT))} files, {total} bytes")


if __name__ == "__main__":
    main()
