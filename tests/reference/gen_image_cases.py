#!/usr/bin/python3
"""Generates the image fixtures for tests/test_image.cpp.

Run from the project root with Debian's Python (it needs PIL, numpy, torch and torchvision):

    /usr/bin/python3 tests/reference/gen_image_cases.py

Writes into tests/fixtures/images/:
  - small test images in several formats (PNG 8/16-bit grey/grey+alpha/RGB/RGBA/palette, BMP, TGA,
    JPEG, GIF) with gradients, noise, hard edges and saturated areas, so that resampling overshoot and
    clipping are exercised;
  - broken files: corrupt.png (a PNG with damaged image data, cut short), not_an_image.png (text),
    zero_size.png (a PNG whose header says 0x0);
  - <image>.decoded: the pixels PIL decodes, image.convert("RGB") (plus the alpha band for LA/RGBA
    images), raw uint8, row-major, interleaved. For 16-bit PNGs it is instead the 16-bit source
    scaled by round(v * 255 / 65535): PIL keeps only the high byte of 16-bit RGB and clips 16-bit
    grey to 255 in convert("RGB"), so we define the correct value ourselves;
  - <image>.clip<n>.f32: OpenAI CLIP's preprocessing (clip/clip.py _transform, rebuilt below since
    that module cannot be imported without the rest of the package) of the file opened by PIL, at
    n = 32 and n = 24; raw little-endian float32, shape [3, n, n]. For 16-bit PNGs the transform
    runs on the scaled 8-bit pixels above;
  - plane_7x5.f32 and plane_7x5.to<w>x<h>.f32: a float32 score-map-like plane and PIL's
    BICUBIC resize of it in mode "F" (enlarged to 12x9, shrunk to 3x2);
  - cases.txt: one line per image: file, width, height, decoded channels (3 or 4), and whether
    reference tensors exist (palette images have none: PIL resizes palette images with NEAREST).
"""
import os
import struct
import sys
import zlib

import numpy as np
import torch
from PIL import Image
from torchvision.transforms import CenterCrop, Compose, InterpolationMode, Normalize, Resize, ToTensor

ROOT = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "fixtures", "images"))
SIZES = (32, 24)


def clip_transform(n_px):
    # Verbatim from clip/clip.py (_transform and _convert_image_to_rgb).
    return Compose([
        Resize(n_px, interpolation=InterpolationMode.BICUBIC),
        CenterCrop(n_px),
        lambda image: image.convert("RGB"),
        ToTensor(),
        Normalize((0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711)),
    ])


def structured(rng, w, h, channels, maxval=255):
    """Gradients, noise, a bright rectangle, a dark diagonal band and saturated corners."""
    y, x = np.mgrid[0:h, 0:w].astype(np.float64)
    out = np.empty((h, w, channels))
    for c in range(channels):
        out[..., c] = (x / max(w - 1, 1)) * (0.3 + 0.3 * c) + (y / max(h - 1, 1)) * (0.7 - 0.2 * c)
    out = out / out.max() * 0.8 + 0.1
    out += rng.normal(0.0, 0.06, out.shape)
    out[h // 4: h // 2, w // 3: 2 * w // 3, :] = 0.97                # hard-edged bright block
    band = np.abs((x - y * w / h)) < 2.5
    out[band] = 0.02                                                 # dark diagonal line
    out[: h // 6, : w // 6] = 1.0                                    # saturated corners
    out[-(h // 6):, -(w // 6):] = 0.0
    return np.clip(np.round(out * maxval), 0, maxval)


def alpha_plane(rng, w, h):
    """Opaque, fully transparent and partly transparent regions; transparent pixels keep colours."""
    y, x = np.mgrid[0:h, 0:w]
    a = np.full((h, w), 255.0)
    a[:, : w // 4] = 0
    a[h // 2:, w // 2:] = (x[h // 2:, w // 2:] * 255.0 / w + rng.uniform(0, 60, (h - h // 2, w - w // 2)))
    a[: h // 5, w // 2:] = 128
    return np.clip(np.round(a), 0, 255)


def write_png16(path, arr):
    """A 16-bit PNG (PIL cannot write 16-bit RGB). arr: uint16 [h, w] or [h, w, 3]."""
    h, w = arr.shape[:2]
    colour = 0 if arr.ndim == 2 else 2
    raw = b"".join(b"\x00" + arr[r].astype(">u2").tobytes() for r in range(h))

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", w, h, 16, colour, 0, 0, 0)
    with open(path, "wb") as f:
        f.write(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(raw, 9)) + chunk(b"IEND", b""))


def write_raw(path, arr):
    with open(path, "wb") as f:
        f.write(np.ascontiguousarray(arr).tobytes())


def decoded_pixels(im):
    rgb = np.asarray(im.convert("RGB"))
    if im.mode in ("LA", "RGBA"):
        return np.concatenate([rgb, np.asarray(im.getchannel("A"))[..., None]], axis=2)
    return rgb


def main():
    os.makedirs(ROOT, exist_ok=True)
    rng = np.random.default_rng(20240607)
    manifest = []

    def add(name, pil_for_transform, decoded, with_reference=True):
        h, w, c = decoded.shape
        write_raw(os.path.join(ROOT, name + ".decoded"), decoded.astype(np.uint8))
        if with_reference:
            for n in SIZES:
                t = clip_transform(n)(pil_for_transform)
                assert t.shape == (3, n, n) and t.dtype == torch.float32
                write_raw(os.path.join(ROOT, f"{name}.clip{n}.f32"), t.numpy().astype("<f4"))
        manifest.append(f"{name} {w} {h} {c} {1 if with_reference else 0}")

    def save_and_add(name, im, **save_args):
        path = os.path.join(ROOT, name)
        im.save(path, **save_args)
        reopened = Image.open(path)
        reopened.load()
        add(name, reopened, decoded_pixels(reopened))

    u8 = lambda a: a.astype(np.uint8)
    # Sizes chosen so that n = 32 and n = 24 cover shrinking, enlarging, both orientations, odd
    # crop margins, and a shorter side equal to n (no resize at all).
    save_and_add("rgb_37x53.png", Image.fromarray(u8(structured(rng, 37, 53, 3)), "RGB"))
    save_and_add("rgb_50x41.png", Image.fromarray(u8(structured(rng, 50, 41, 3)), "RGB"))
    save_and_add("grey_20x27.png", Image.fromarray(u8(structured(rng, 20, 27, 1)[..., 0]), "L"))
    la = np.dstack([structured(rng, 28, 33, 1)[..., 0], alpha_plane(rng, 28, 33)])
    save_and_add("grey_alpha_28x33.png", Image.fromarray(u8(la), "LA"))
    rgba = np.dstack([structured(rng, 45, 38, 3), alpha_plane(rng, 45, 38)])
    save_and_add("rgba_45x38.png", Image.fromarray(u8(rgba), "RGBA"))
    save_and_add("rgb_24x31.bmp", Image.fromarray(u8(structured(rng, 24, 31, 3)), "RGB"))
    save_and_add("grey_26x22.bmp", Image.fromarray(u8(structured(rng, 26, 22, 1)[..., 0]), "L"))
    save_and_add("rgb_31x44.tga", Image.fromarray(u8(structured(rng, 31, 44, 3)), "RGB"), compression="tga_rle")

    # 16-bit PNGs: the reference runs on correctly scaled 8-bit pixels, not on what PIL decodes.
    for name, arr in (("grey16_30x26.png", structured(rng, 30, 26, 1, 65535)[..., 0]),
                      ("rgb16_27x35.png", structured(rng, 27, 35, 3, 65535))):
        arr = arr.astype(np.uint16)
        write_png16(os.path.join(ROOT, name), arr)
        scaled = u8(np.round(arr.astype(np.float64) * 255.0 / 65535.0))
        pil = Image.fromarray(scaled, "L" if scaled.ndim == 2 else "RGB")
        add(name, pil, np.asarray(pil.convert("RGB")))

    # JPEG: reference is PIL's (libjpeg's) decode; stb decodes slightly differently.
    save_and_add("photo_48x40.jpg", Image.fromarray(u8(structured(rng, 48, 40, 3)), "RGB"), quality=90)

    # Palette images, decoded colours only (CLIP would resize them with NEAREST, see
    # preprocess.hpp). The PNG has a transparent palette entry (tRNS), which convert("RGB") drops.
    for name, size, extra in (("palette_21x25.png", (21, 25), {"transparency": 3}), ("palette_19x17.gif", (19, 17), {})):
        pal = Image.fromarray(u8(structured(rng, size[0], size[1], 3)), "RGB").quantize(colors=16)
        path = os.path.join(ROOT, name)
        pal.save(path, **extra)
        reopened = Image.open(path)
        assert reopened.mode == "P"
        add(name, None, np.asarray(reopened.convert("RGB")), with_reference=False)

    # A float plane resized in PIL's mode "F" (the path score maps take).
    plane = (np.add.outer(np.linspace(0, 1, 5), np.linspace(-1, 2, 7)) + rng.normal(0, 0.3, (5, 7))).astype(np.float32)
    plane[1:3, 2:4] = 4.0  # a hot spot with hard edges: overshoot must not be clipped
    write_raw(os.path.join(ROOT, "plane_7x5.f32"), plane.astype("<f4"))
    for w, h in ((12, 9), (3, 2)):
        out = np.asarray(Image.fromarray(plane, "F").resize((w, h), Image.BICUBIC), dtype=np.float32)
        write_raw(os.path.join(ROOT, f"plane_7x5.to{w}x{h}.f32"), out.astype("<f4"))

    # CMYK JPEG (as Photoshop and print workflows write them, Adobe marker, inverted ink values):
    # PIL's convert("RGB") and stb use the same formula, (255 - C)(255 - K) / 255 on stored values.
    # Its own generator so the cases above keep their random streams.
    cmyk_rng = np.random.default_rng(20261127)
    save_and_add("cmyk_40x36.jpg", Image.fromarray(u8(structured(cmyk_rng, 40, 36, 3)), "RGB").convert("CMYK"), quality=90)

    # Broken files.
    with open(os.path.join(ROOT, "rgb_37x53.png"), "rb") as f:
        good = bytearray(f.read())
    idat = good.index(b"IDAT") + 4
    good[idat + 2: idat + 40] = b"\xff" * 38  # damage the zlib stream just past its header
    with open(os.path.join(ROOT, "corrupt.png"), "wb") as f:
        f.write(bytes(good[: len(good) * 2 // 3]))
    with open(os.path.join(ROOT, "not_an_image.png"), "w") as f:
        f.write("This is a text file that only claims to be a PNG by its name.\n")
    ihdr = struct.pack(">IIBBBBB", 0, 0, 8, 2, 0, 0, 0)
    crc = struct.pack(">I", zlib.crc32(b"IHDR" + ihdr) & 0xFFFFFFFF)
    with open(os.path.join(ROOT, "zero_size.png"), "wb") as f:
        f.write(b"\x89PNG\r\n\x1a\n" + struct.pack(">I", 13) + b"IHDR" + ihdr + crc)

    with open(os.path.join(ROOT, "cases.txt"), "w") as f:
        f.write("# file width height decoded_channels has_clip_reference (gen_image_cases.py)\n")
        f.write("\n".join(manifest) + "\n")
    total = sum(os.path.getsize(os.path.join(ROOT, p)) for p in os.listdir(ROOT))
    print(f"wrote {len(os.listdir(ROOT))} files, {total} bytes, into {ROOT}", file=sys.stderr)


if __name__ == "__main__":
    main()
