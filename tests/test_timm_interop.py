"""classzoo's TF-slim models inside timm: registry names, pretrained_cfg values that describe the
real input (checked against classzoo's TF-exact transforms), feature extraction, and pretrained
weights through timm's own hub cache without a network."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import timm
import torch
from PIL import Image

import classzoo  # noqa: F401  (registers the slim models with timm)
from classzoo.data.tf_presets import build_tf_transform

SLIM = ["slim_resnet_v1_50", "slim_resnet_v1_101", "slim_resnet_v1_152", "slim_inception_v4"]
VGG_MEANS = (123.68, 116.78, 103.94)  # slim vgg_preprocessing _R_MEAN, _G_MEAN, _B_MEAN
RESNET_TRUTH = {
    "input_size": (3, 224, 224),
    "interpolation": "bilinear",
    "crop_pct": 224 / 256,  # vgg eval: short side 256, central 224
    "crop_mode": "center",
    "mean": tuple(m / 255 for m in VGG_MEANS),  # 0-255 minus the VGG means, in timm's units
    "std": (1 / 255,) * 3,
}
INCEPTION_TRUTH = {
    "input_size": (3, 299, 299),
    "interpolation": "bilinear",
    "crop_pct": 0.875,  # central_fraction=0.875 of each side, then resize to 299 x 299
    "crop_mode": "squash",
    "mean": (0.5,) * 3,  # [-1, 1]
    "std": (0.5,) * 3,
}


def _python(code: str, env: dict | None = None) -> subprocess.CompletedProcess:
    import os

    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, **(env or {})},
    )


def test_a_probe_for_timm_before_importing_it_keeps_the_slim_models():
    """``importlib.util.find_spec("timm")`` (how libraries ask whether timm is installed) took
    classzoo's import hook away, so the later ``import timm`` left the slim models out."""
    proc = _python(
        """
        import importlib.util, classzoo
        assert importlib.util.find_spec("timm") is not None
        import timm
        print(timm.list_models("slim*"))
        """
    )
    assert proc.returncode == 0, proc.stderr
    assert "slim_resnet_v1_50" in proc.stdout and "slim_inception_v4" in proc.stdout


def test_import_classzoo_then_timm_creates_every_slim_model_with_true_data_config():
    proc = _python(
        f"""
        import json, classzoo, timm, torch
        out = {{}}
        with torch.device("meta"):  # no weights to initialise: only the registry and configs
            for name in {SLIM!r}:
                m = timm.create_model(name)
                cfg = timm.data.resolve_data_config(model=m)
                out[name] = dict(cfg, num_classes=m.num_classes, kind=type(m).__name__,
                                 label_offset=m.pretrained_cfg.get("label_offset"))
        print(json.dumps(out))
        """
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    got = json.loads(proc.stdout)
    for name in SLIM:
        truth = INCEPTION_TRUTH if "inception" in name else RESNET_TRUTH
        cfg = got[name]
        for key, value in truth.items():
            if isinstance(value, tuple):
                np.testing.assert_allclose(cfg[key], value, rtol=0, atol=1e-12, err_msg=key)
            else:
                assert cfg[key] == value, (name, key)
        classes, offset = (1001, 1) if "inception" in name else (1000, 0)
        assert (cfg["num_classes"], cfg["label_offset"]) == (classes, offset)
    assert got["slim_inception_v4"]["kind"] == "SlimInceptionV4"
    assert timm.create_model("inception_v4", pretrained=False).num_classes == 1000  # timm's own


def _image(h: int, w: int) -> Image.Image:
    rng = np.random.default_rng(7)
    return Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8))


@pytest.mark.parametrize(
    ("name", "preset", "size"),
    # sizes where both pipelines' resizes are identities, so only crop offsets and the pixel
    # formula are compared: vgg short side already 256; inception 341 * 0.875 -> 299 (TF
    # central_crop offset int(42.625 / 2) = 21) and timm's squash scale floor(299 / .875) = 341
    [("slim_resnet_v1_50", "vgg", (256, 320)), ("slim_inception_v4", "inception", (341, 341))],
)
def test_timm_transform_from_the_config_equals_classzoos_slim_transform(name, preset, size):
    with torch.device("meta"):
        model = timm.create_model(name)
    cfg = timm.data.resolve_data_config(model=model)
    theirs = timm.data.create_transform(**cfg)(_image(*size))
    ours = build_tf_transform(preset, train=False)(_image(*size))
    assert theirs.shape == ours.shape
    scale = 255.0 if preset == "vgg" else 1.0  # vgg inputs span -123.7..151.1
    assert (theirs - ours).abs().max().item() <= 1e-5 * scale


@pytest.mark.slow  # initialises full-size networks: ~30-90 s on a busy 2-core CPU
def test_features_only_gives_slim_end_points():
    x = torch.randn(1, 3, 64, 64)
    for name, channels in [
        ("slim_resnet_v1_50", [64, 256, 512, 1024, 2048]),
        ("slim_inception_v4", [64, 160, 384, 1024, 1536]),
    ]:
        torch.manual_seed(0)
        feats = timm.create_model(name, features_only=True).eval()
        assert feats.feature_info.channels() == channels
        torch.manual_seed(0)  # classzoo's factory takes timm's options too (it had refused them)
        ours = classzoo.create_model(name, features_only=True).eval()
        assert ours.feature_info.channels() == channels
        assert all(torch.equal(a, b) for a, b in zip(ours.parameters(), feats.parameters()))
        assert feats.feature_info.reduction() == [2, 4, 8, 16, 32]
        if "inception" in name:
            x = torch.randn(1, 3, 107, 107)  # the smallest size its VALID convs accept
        with torch.no_grad():
            out = feats(x)
        assert [o.shape[1] for o in out] == channels


def test_a_bad_value_is_not_called_an_unknown_argument():
    """Any TypeError had been reported as "does not take these arguments [...]"."""
    with pytest.raises(
        classzoo.UserError, match="'resnet10t' cannot be built with {'num_classes': '10'}"
    ):
        classzoo.create_model("resnet10t", num_classes="10")
    with pytest.raises(classzoo.UserError, match="'slim_resnet_v1_50' does not take .*'colour'"):
        classzoo.create_model("slim_resnet_v1_50", colour=1)


@pytest.mark.slow
def test_resnet_block_features_are_the_non_strided_activations():
    """slim ``store_non_strided_activations``: block k's last unit at stride 1; subsampling it
    gives exactly what the network passes on (the strided unit's output)."""
    torch.manual_seed(0)
    model = timm.create_model("slim_resnet_v1_50").eval()
    x = torch.randn(1, 3, 96, 96)
    seen = {}
    hooks = [
        getattr(model, n).register_forward_hook(lambda m, i, o, n=n: seen.setdefault(n, o))
        for n in ("layer1", "layer2", "layer3", "layer4")
    ]
    with torch.no_grad():
        final, feats = model.forward_intermediates(x)
        logits = model(x)
    for h in hooks:
        h.remove()
    for k, name in enumerate(("layer1", "layer2", "layer3"), start=1):
        assert feats[k].shape[-1] == 2 * seen[name].shape[-1]
        # float32 rounding of the two convolutions (stride 1 then subsampled, stride 2): oneDNN
        # picks other kernels for them on some CPUs (8.5e-4 of layer3's 1509 on an AMD EPYC)
        atol = 2e-6 * float(seen[name].abs().max())
        torch.testing.assert_close(feats[k][:, :, ::2, ::2], seen[name], rtol=1e-5, atol=atol)
    atol = 2e-6 * float(seen["layer4"].abs().max())
    torch.testing.assert_close(feats[4], seen["layer4"], rtol=1e-5, atol=atol)
    atol = 2e-6 * float(logits.abs().max())
    torch.testing.assert_close(model.forward_head(final), logits, rtol=1e-5, atol=atol)


def test_pretrained_loads_timms_hub_cache_file_and_fails_fast_without_it(tmp_path):
    """A hub cache laid out as huggingface_hub writes it (refs/main -> snapshots/REV/FILE)."""
    from safetensors.torch import save_file

    torch.manual_seed(3)
    reference = timm.create_model("resnet10t")
    repo = tmp_path / "hub" / "models--timm--resnet10t.c3_in1k"
    snap = repo / "snapshots" / ("a" * 40)
    snap.mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("a" * 40)
    save_file(reference.state_dict(), str(snap / "model.safetensors"))
    torch.save(reference.state_dict(), tmp_path / "ref.pt")
    torch.save(timm.create_model("resnet10t").state_dict(), tmp_path / "other.pt")
    code = f"""
        import time, torch
        from classzoo.models import registry
        from classzoo.errors import UserError
        net = registry.build("resnet10t", None, pretrained=True)
        ref = torch.load({str(tmp_path / "ref.pt")!r})
        print("same", all(torch.equal(v, ref[k]) for k, v in net.state_dict().items()))
        # timm's pretrained_cfg_overlay: its keys reach the cfg, and a local file of its own
        # is loaded offline (both refused before: "multiple values", "not in the cache")
        net = registry.build(
            "resnet10t", None, pretrained=True, pretrained_cfg_overlay={{"mean": (0.1, 0.2, 0.3)}}
        )
        print("mean", net.pretrained_cfg["mean"])
        own = {{"file": {str(tmp_path / "other.pt")!r}}}
        other = torch.load(own["file"])
        net = registry.build("resnet10t", None, pretrained=True, pretrained_cfg_overlay=own)
        print("file", all(torch.equal(v, other[k]) for k, v in net.state_dict().items()))
        t = time.monotonic()
        try:
            registry.build("resnet18", 10, pretrained=True)
        except UserError as exc:
            print("error", round(time.monotonic() - t, 2), exc)
        """
    env = {"HF_HUB_CACHE": str(tmp_path / "hub"), "HF_HUB_OFFLINE": "1"}
    proc = _python(code, env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    lines = proc.stdout.strip().splitlines()
    assert lines[:3] == ["same True", "mean (0.1, 0.2, 0.3)", "file True"]
    _, seconds, message = lines[3].split(" ", 2)
    assert float(seconds) < 5
    assert str(tmp_path / "hub") in message and "model.checkpoint" in message


def test_slim_layouts_refuse_pretrained_with_the_checkpoint_alternative():
    from classzoo.errors import UserError
    from classzoo.models import registry

    for name in ("resnet_v1_50", "slim_inception_v4"):
        with pytest.raises(UserError, match="model.checkpoint"):
            registry.build(name, None, pretrained=True)
    with pytest.raises(UserError, match="classzoo convert slim"):
        timm.create_model("slim_resnet_v1_50", pretrained=True)


def _timm_validate_loss(model, folder) -> float:
    """The loss timm's validate.py computes: the model's test-size cfg, timm's eval transform
    and ImageDataset, one batch."""
    from timm.data import ImageDataset, create_transform, resolve_data_config

    config = resolve_data_config({}, model=model, use_test_size=True)
    ds = ImageDataset(str(folder), transform=create_transform(**config))
    xs = torch.stack([ds[i][0] for i in range(len(ds))])
    ys = torch.tensor([ds[i][1] for i in range(len(ds))])
    with torch.no_grad():
        return torch.nn.functional.cross_entropy(model(xs), ys).item()


def test_eval_of_timm_weights_uses_validate_py_preprocessing(tmp_path, capsys):
    """Weights without a classzoo record evaluate as timm's validate.py evaluates them: the
    model's test size where its cfg has one (resnet10t: trains at 176, tests at 224 / 0.95);
    classzoo evaluated at the training size, so its numbers were not timm's."""
    from timm.data import resolve_data_config

    from classzoo.cli import main

    model = timm.create_model("resnet10t", num_classes=3).eval()
    weights = tmp_path / "w.pth"
    torch.save(model.state_dict(), weights)
    rng = np.random.default_rng(0)
    for c in "abc":
        (tmp_path / "val" / c).mkdir(parents=True)
        for i in range(3):
            pixels = rng.integers(0, 256, (150, 200, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(tmp_path / "val" / c / f"{i}.jpg", quality=95)
    config = resolve_data_config({}, model=model, use_test_size=True)  # validate.py's
    assert config["input_size"] == (3, 224, 224)  # not the training 176
    truth = _timm_validate_loss(model, tmp_path / "val")
    argv = ["eval", "--model", "resnet10t", "--checkpoint", str(weights), "--json"]
    argv += ["--data-dir", str(tmp_path / "val"), "--set", "data.num_workers=0"]
    assert main(argv) == 0
    assert json.loads(capsys.readouterr().out)["loss"] == pytest.approx(truth, rel=1e-5)
    # the file timm's train.py writes (its CheckpointSaver, with train.py's argparse.Namespace
    # under "args"): refused by the weights-only unpickler before, which timm's loader allows
    from timm.utils import CheckpointSaver

    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    saver = CheckpointSaver(model, optimizer, args=argparse.Namespace(model="resnet10t"))
    saver.checkpoint_dir = saver.recovery_dir = str(tmp_path / "timm")
    os.makedirs(saver.checkpoint_dir)
    saver.save_checkpoint(epoch=0, metric=1.0)
    best = tmp_path / "timm" / "model_best.pth.tar"
    assert main([*argv[:4], str(best), *argv[5:]]) == 0
    assert json.loads(capsys.readouterr().out)["loss"] == pytest.approx(truth, rel=1e-5)


@pytest.mark.parametrize("how", ["model cfg", "data.crop_mode"])
def test_eval_crops_as_the_models_crop_mode_says(tmp_path, capsys, how):
    """timm's eval crop_mode: ``squash`` (137 timm weights: eva02, maxvit_*_tf, dm_nfnet,
    convnext *_384 ...) resizes both sides before the centre crop. classzoo always resized
    the short side (timm's ``center``): on non-square images another top-1 than timm's."""
    from timm.data import resolve_data_config

    from classzoo.cli import main

    overlay = {"crop_mode": "squash"}
    model = timm.create_model("resnet10t", num_classes=3, pretrained_cfg_overlay=overlay).eval()
    weights = tmp_path / "w.pth"
    torch.save(model.state_dict(), weights)
    rng = np.random.default_rng(1)
    for c in "abc":
        (tmp_path / "val" / c).mkdir(parents=True)
        for i in range(2):
            pixels = rng.integers(0, 256, (120, 240, 3), dtype=np.uint8)  # 2:1, far from square
            Image.fromarray(pixels).save(tmp_path / "val" / c / f"{i}.png")
    assert resolve_data_config({}, model=model, use_test_size=True)["crop_mode"] == "squash"
    truth = _timm_validate_loss(model, tmp_path / "val")
    argv = ["eval", "--model", "resnet10t", "--checkpoint", str(weights), "--json"]
    argv += ["--data-dir", str(tmp_path / "val"), "--set", "data.num_workers=0"]
    if how == "model cfg":
        argv += ["--set", "model.kwargs={pretrained_cfg_overlay: {crop_mode: squash}}"]
    else:
        argv += ["--set", "data.crop_mode=squash"]
    assert main(argv) == 0
    assert json.loads(capsys.readouterr().out)["loss"] == pytest.approx(truth, rel=1e-5)


@pytest.mark.parametrize(("name", "timm_twin"), [("slim_resnet_v1_50", "resnet50"), ("slim_inception_v4", "inception_v4")])  # fmt: skip
def test_reset_classifier_takes_timms_global_pool(name, timm_twin):
    """timm's idiom for unpooled feature maps, ``reset_classifier(0, '')``, was a TypeError on
    the slim layouts; the truth is timm's own twin architecture's output shape."""
    x = torch.zeros(1, 3, 160, 160)
    with torch.device("meta"):
        ours, twin = timm.create_model(name), timm.create_model(timm_twin)
    ours.reset_classifier(0, "")
    twin.reset_classifier(0, "")
    assert ours.eval()(x.to("meta")).shape == twin.eval()(x.to("meta")).shape
    ours.reset_classifier(7)  # timm's default global_pool="avg" pools again
    assert ours(x.to("meta")).shape == (1, 7)
    with pytest.raises(ValueError, match="needs num_classes=0"):
        ours.reset_classifier(7, "")
