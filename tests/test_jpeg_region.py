"""The JPEG window decoder (data/_jpeg_region.c) gives the whole-image decode's pixels, and the
training presets that use it give the samples they gave without it, bit for bit.

The outside truth is simplejpeg's whole-image decode, which is TensorFlow's decode_jpeg
(IFAST) and PIL's (ISLOW) pixel for pixel (tests/test_decode.py, test_tf_preprocessing.py).
"""

from __future__ import annotations

import io
import random
import subprocess
import sys
import sysconfig
from pathlib import Path

import numpy as np
import pytest
import simplejpeg
import torch
from PIL import Image

from classzoo.data import jpeg_region
from classzoo.data.decode import EncodedImage, UnreadableImage
from classzoo.data.tf_presets import InceptionTrain, VggTrain
from classzoo.data.transforms import EvalPreprocess, TrainAugment, build_transform
from conftest import foolbox_data

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)

needs_windows = pytest.mark.skipif(
    not jpeg_region.available(), reason=f"the JPEG window decoder is {jpeg_region.state()}"
)


def _jpegs() -> list[tuple[str, bytes]]:
    """Every kind of JPEG a data set holds: progressive (foolbox's files as they are),
    baseline with 4:2:0, 4:2:2 and 4:4:4 chroma, greyscale, odd sizes, restart markers."""
    out = []
    for k, path in enumerate(sorted(foolbox_data().glob("imagenet_*.jpg"))[:6]):
        data = path.read_bytes()
        img = Image.open(io.BytesIO(data)).convert("RGB")
        out.append((f"{path.name} progressive", data))
        for sub, size in ((2, (500, 375)), (1, (333, 500)), (0, (641, 479))):
            out.append((f"{path.name} {size} subsampling {sub}", _encode(img.resize(size), sub)))
        out.append((f"{path.name} grey", _encode(img.convert("L").resize((301, 227)), 0)))
        if k == 0:
            out.append((f"{path.name} restarts", _encode(img, 2, restart_marker_rows=1)))
    return out


def _encode(img: Image.Image, subsampling: int, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=90, subsampling=subsampling, **kw)
    return buf.getvalue()


def _whole(data: bytes, fastdct: bool, denom: int) -> np.ndarray:
    h, w = simplejpeg.decode_jpeg_header(data)[:2]
    size = {} if denom == 1 else {"min_height": -(-h // denom), "min_width": -(-w // denom)}
    return simplejpeg.decode_jpeg(data, "RGB", fastdct=fastdct, fastupsample=False, **size)


@needs_windows
def test_every_window_is_the_whole_decode_s_pixels():
    """Random windows (edges, single rows and columns, the whole image) of each kind of JPEG,
    both DCTs, at 1, 1/2, 1/4 and 1/8 scale: equal to the same window of simplejpeg's decode.
    Without the decoder's extra column on each side, a fifth of such windows differed in their
    first or last column (libjpeg upsamples a cropped scanline's edges as the image's)."""
    rng = np.random.default_rng(0)
    n = 0
    for name, data in _jpegs():
        for fastdct in (True, False):
            for denom in (1, 2, 4, 8):
                whole = _whole(data, fastdct, denom)
                H, W = whole.shape[:2]
                windows = [((0, H), (0, W)), ((H - 1, H), (W - 1, W)), ((0, 1), (0, 1))]
                for _ in range(12):
                    top, left = int(rng.integers(0, H)), int(rng.integers(0, W))
                    bottom = int(rng.integers(top + 1, H + 1))
                    windows.append(((top, bottom), (left, int(rng.integers(left + 1, W + 1)))))
                for rows, cols in windows:
                    part = jpeg_region.decode_window(data, denom, fastdct, rows, cols)
                    assert part is not None, (name, rows, cols)
                    expected = whole[slice(*rows), slice(*cols)]
                    assert np.array_equal(part, expected), (name, fastdct, denom, rows, cols)
                    n += 1
    assert n >= 1500


@needs_windows
def test_narrow_windows_at_the_image_edges():
    """One- and two-column windows over every row at the left and right edges of 4:2:0 and
    4:2:2 JPEGs whose width leaves a partial last iMCU of every size: a crop that narrow can
    have a chroma row 1 sample wide, which libjpeg upsamples by replication (up to 55 levels
    off), so the decoder crops at least 3 iMCUs."""
    y, x = np.mgrid[0:120, 0:162]
    rgb = np.stack([(x * 7 + y * 3) % 256, (y * 11) % 256, (x * y) % 256], -1).astype(np.uint8)
    for width in (162, 161, 160, 50, 34, 33, 18, 17):
        for sub in (2, 1):
            data = _encode(Image.fromarray(rgb[:, :width]), sub)
            for denom in (1, 2):
                whole = _whole(data, True, denom)
                H, W = whole.shape[:2]
                for cols in ((0, 1), (0, 2), (1, 2), (W - 1, W), (W - 2, W), (W - 2, W - 1)):
                    part = jpeg_region.decode_window(data, denom, True, (0, H), cols)
                    assert part is not None and np.array_equal(part, whole[:, slice(*cols)]), (
                        width,
                        sub,
                        denom,
                        cols,
                    )


def _damaged() -> list[tuple[str, bytes, bool]]:
    """(what, bytes, whether a window decode may use it): damaged files of each kind whose
    damage a window above it would not meet, and sound files with unusual endings."""
    baseline = _jpegs()[1][1]  # 500 x 375, 4:2:0
    progressive = _jpegs()[0][1]
    sos = [i for i in range(len(progressive) - 1) if progressive[i : i + 2] == b"\xff\xda"]
    sof = baseline.index(b"\xff\xc0")
    sof_segment = baseline[sof : sof + 2 + int.from_bytes(baseline[sof + 2 : sof + 4], "big")]
    body, eoi = baseline[:-2], baseline[-2:]
    flipped = bytearray(baseline)
    flipped[len(baseline) * 9 // 10] ^= 0x5A  # entropy-coded data near the bottom
    out = [(f"progressive cut after {k} scans", progressive[: sos[k]] + eoi, False)
           for k in (1, 2, len(sos) - 1)]  # fmt: skip
    out += [
        ("a baseline file without its end, then another JPEG", body + baseline, False),
        ("a second frame header after the scan", body + sof_segment + eoi, False),
        (
            "a bad restart interval after the scan",
            body + b"\xff\xdd\x00\x05\x00\x01\x00" + eoi,
            False,
        ),
        (
            "a JFIF 2.01 header after the scan",
            body + b"\xff\xe0\x00\x10JFIF\x00\x02\x01" + b"\0" * 7 + eoi,
            False,
        ),
        ("corrupt data near the bottom", bytes(flipped), True),
        ("a comment after the scan", body + b"\xff\xfe\x00\x06note" + eoi, True),
        ("zeros after the end", baseline + b"\0" * 7, True),
        ("bytes after the end", baseline + b"trailing", False),  # decoded whole
    ]
    return out


@needs_windows
def test_damaged_files_are_decided_as_a_whole_decode_decides_them(monkeypatch):
    """A window decode refuses what it cannot see (incomplete progressive scans, markers
    after a single scan that a whole decode errs on), and then each preset decodes the file
    whole: the same samples, or the same refusal, at every draw, windows or not."""
    for what, data, windowed in _damaged():
        part = jpeg_region.decode_window(data, 1, True, (0, 50), (0, 50))
        assert (part is not None) == windowed or what == "corrupt data near the bottom", what
        images = [EncodedImage(data, "damaged.jpg")]
        for name, preset in _presets()[::2]:
            outcomes = []
            for on in (True, False):
                with monkeypatch.context() as m:
                    if not on:
                        m.setattr(jpeg_region, "available", lambda: False)
                    try:
                        outcomes.append(_samples(preset, images))
                    except UnreadableImage as exc:
                        outcomes.append(str(exc))
            windows, whole = outcomes
            assert type(windows) is type(whole), (what, name, windows, whole)
            assert isinstance(whole, str) or all(map(_same, windows, whole)), (what, name)


def _presets() -> list[tuple[str, object]]:
    timm = EvalPreprocess("timm", 224, 0.875, "bilinear", MEAN, STD)
    small = EvalPreprocess("timm", 64, 0.875, "bicubic", MEAN, STD)
    return [
        ("vgg", VggTrain()),
        ("vgg 64 (1/2-1/8 scale)", VggTrain(64, 70, 600)),
        ("inception", InceptionTrain()),
        ("inception 64 (1/2-1/8 scale)", InceptionTrain(64)),
        ("inception all methods", InceptionTrain(fast_mode=False)),
        ("timm", build_transform(timm, True, TrainAugment(interpolation="random", color_jitter=0.4))),
        ("timm 64 (1/2-1/8 scale)", build_transform(small, True, TrainAugment(interpolation="bicubic"))),
    ]  # fmt: skip


def _samples(preset, images: list[EncodedImage]) -> list:
    out = []
    for k, img in enumerate(images):
        for seed in range(3):
            torch.manual_seed(100 * k + seed)
            random.seed(100 * k + seed)  # timm's interpolation choice
            out.append(preset.sample(img))
    return out


def _same(a, b) -> bool:
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    return torch.equal(a, b)


class _Decoded:
    """A pass-through spy on the window decoder: how many windows it decoded."""

    def __init__(self, real):
        self.real, self.count = real, 0

    def __call__(self, *args):
        out = self.real(*args)
        self.count += out is not None
        return out


@needs_windows
@pytest.mark.parametrize("name,preset", _presets(), ids=[n for n, _ in _presets()])
def test_training_presets_sample_the_same_pixels_from_windows(monkeypatch, name, preset):
    """Each training preset at the same draws, decoding windows and decoding whole images:
    the same samples, bit for bit (crops at full scale and at 1/2-1/8, flips, every resize)."""
    images = [EncodedImage(data, name) for name, data in _jpegs()]
    spy = _Decoded(jpeg_region.decode_window)
    monkeypatch.setattr(jpeg_region, "decode_window", spy)
    windows = _samples(preset, images)
    assert spy.count == len(windows)  # every sample came from a window (these files are sound)
    monkeypatch.setattr(jpeg_region, "available", lambda: False)
    whole = _samples(preset, images)
    differ = [i for i, (a, b) in enumerate(zip(windows, whole)) if not _same(a, b)]
    assert not differ, f"{len(differ)} of {len(whole)} samples differ"


@needs_windows
@pytest.mark.parametrize("preset", ["vgg", "inception", "timm"])
def test_a_truncated_jpeg_stays_refused_whichever_window_is_read(preset):
    """A JPEG cut short (its header and its first rows intact) is refused as before, even when
    the crop lies in the rows that are there: the window decoder is not asked for files without
    an end marker."""
    data = _jpegs()[1][1]
    cut = EncodedImage(data[: len(data) * 3 // 4], "cut.jpg")
    pipe = {"vgg": VggTrain(), "inception": InceptionTrain()}.get(preset) or _presets()[5][1]
    for seed in range(5):
        torch.manual_seed(seed)
        with pytest.raises(UnreadableImage, match="cut.jpg"):
            pipe.sample(cut)


@needs_windows
def test_damaged_or_foreign_bytes_are_refused_without_a_crash():
    """Hostile bytes give None (the caller's whole-image rules decide), never a crash: a bit
    flipped or a byte cut anywhere in a JPEG, random bytes, and windows outside the image."""
    data = _jpegs()[1][1]
    rng = np.random.default_rng(1)
    for _ in range(300):
        bad = bytearray(data)
        at = int(rng.integers(0, len(bad)))
        if rng.random() < 0.5:
            bad[at] ^= 1 << int(rng.integers(0, 8))
        else:
            del bad[at : at + int(rng.integers(1, 64))]
        part = jpeg_region.decode_window(bytes(bad), 1, True, (10, 200), (30, 300))
        assert part is None or part.shape[2] == 3
    assert jpeg_region.decode_window(rng.bytes(5000), 1, True, (0, 8), (0, 8)) is None
    assert jpeg_region.decode_window(data, 1, True, (400, 410), (0, 8)) is None  # below it
    with pytest.raises(ValueError, match="denom must be"):
        jpeg_region._jpeg_region.decode_window(data, 3, True, 0, 8, 0, 8)


def test_a_decoder_that_disagrees_is_not_used(monkeypatch):
    """The check before the first window: a libjpeg whose windows differ from simplejpeg's
    pixels (here one that returns every value one level darker) is turned off and says why,
    and the whole-image decode is used."""
    if jpeg_region._jpeg_region is None:
        assert jpeg_region.state().startswith("off: not built")
        return

    real = jpeg_region._jpeg_region.decode_window

    def darker(*args):
        buf, h, w, x0 = real(*args)
        return bytearray(max(v - 1, 0) for v in buf), h, w, x0

    monkeypatch.setattr(jpeg_region._jpeg_region, "decode_window", darker)
    jpeg_region.state.cache_clear()
    try:
        said = jpeg_region.state()
        assert said.startswith("off: libjpeg-turbo ") and "other pixels than simplejpeg" in said
        assert not jpeg_region.available()
    finally:
        jpeg_region.state.cache_clear()


@needs_windows
def test_a_module_left_from_an_older_build_is_not_called(tmp_path):
    """An in-place .so that a failed rebuild left behind (here: today's C file compiled with an
    older INTERFACE number) is what `import` finds: it is turned off, and says which file and
    how to rebuild it, instead of being called with arguments it may read otherwise."""
    source = (Path(jpeg_region.__file__).parent / "_jpeg_region.c").read_text()
    assert "#define INTERFACE 1\n" in source
    older = tmp_path / "src" / "_jpeg_region.c"
    older.parent.mkdir()
    older.write_text(source.replace("#define INTERFACE 1\n", "#define INTERFACE 0\n"))
    built = tmp_path / "classzoo_stale" / f"_jpeg_region{sysconfig.get_config_var('EXT_SUFFIX')}"
    built.parent.mkdir()
    include = sysconfig.get_paths()["include"]
    compile_ = ["gcc", "-shared", "-fPIC", "-O1", f"-I{include}", str(older), "-ljpeg"]
    subprocess.run([*compile_, "-o", str(built)], check=True, capture_output=True)
    # the stale module takes the real one's place in the package before jpeg_region imports it
    probe = (
        "import importlib.util, sys\n"
        f"spec = importlib.util.spec_from_file_location('classzoo.data._jpeg_region', {str(built)!r})\n"  # noqa: E501
        "stale = importlib.util.module_from_spec(spec); spec.loader.exec_module(stale)\n"
        "sys.modules['classzoo.data._jpeg_region'] = stale\n"
        "from classzoo.data import jpeg_region\n"
        "print(stale.INTERFACE, jpeg_region.available(), jpeg_region.state())\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True
    ).stdout
    assert out.startswith("0 False off: built from another version of _jpeg_region.c (")
    assert str(built) in out and "interface 0, this classzoo calls 1" in out
