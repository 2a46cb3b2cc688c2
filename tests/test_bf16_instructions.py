"""bf16 on a CPU without bf16 instructions: oneDNN emulates it, many times slower than fp32
(docs/benchmarks.md, session 16). ``amp: auto`` is fp32 there; bf16 asked for by name runs,
and the run and ``classzoo bench`` say so. The flags lines are copied from /proc/cpuinfo of the
machines named."""

from __future__ import annotations

import json

import pytest
import yaml

from classzoo.cli import main
from classzoo.engine.precision import cpu_has_bf16_instructions

# the flags that decide, within each machine's real line (abridged around them)
ZEN3_EPYC = "flags\t\t: fpu sse sse2 ssse3 fma sse4_1 sse4_2 avx f16c avx2 sha_ni vaes vpclmulqdq rdpid fsrm"
ZEN4_EPYC = (
    "flags\t\t: fpu sse2 avx avx2 avx512f avx512dq avx512bw avx512vl avx512_bf16 avx512_vnni"
)
SAPPHIRE_RAPIDS = "flags\t\t: fpu sse2 avx2 avx512f avx512_bf16 amx_bf16 amx_tile amx_int8"
ICE_LAKE = "flags\t\t: fpu sse2 avx2 avx512f avx512dq avx512_vnni avx512_vbmi2 avx512_bitalg"
GRAVITON3 = "Features\t: fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics sve bf16 i8mm"
GRAVITON2 = "Features\t: fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp"


@pytest.mark.parametrize(
    "cpuinfo, has",
    [
        (ZEN3_EPYC, False),
        (ICE_LAKE, False),  # AVX-512 without its BF16 extension
        (ZEN4_EPYC, True),
        (SAPPHIRE_RAPIDS, True),
        (GRAVITON3, True),
        (GRAVITON2, False),
        ("processor\t: 0\nvendor_id\t: unknown", True),  # nothing read: nothing claimed
        (f"processor\t: 0\n{ZEN3_EPYC}\n\nprocessor\t: 1\n{ZEN3_EPYC}\n", False),
    ],
)
def test_bf16_instructions_are_read_from_the_cpu_flags(cpuinfo, has):
    assert cpu_has_bf16_instructions(cpuinfo) is has


def test_a_bf16_run_records_whether_it_is_emulated(tmp_path):
    argv = ["train", "--recipe", "quickstart", "--mode", "train", "--max-steps", "1"]
    argv += ["--output-dir", str(tmp_path / "run"), "--amp", "bf16"]
    argv += ["--set", "data.source=synthetic", "--set", "data.image_size=32"]
    assert main([*argv, "--set", "data.num_workers=0"]) == 0
    resolved = yaml.safe_load((tmp_path / "run" / "resolved.yaml").read_text())
    assert resolved["train_precision"] == "bf16"
    note = resolved["precision_note"]
    if cpu_has_bf16_instructions():
        assert note is None
    else:
        assert "without bf16 instructions" in note and "emulates" in note
    log = (tmp_path / "run" / "console.log").read_text()
    assert (note is not None) == ("precision: train bf16 as asked" in log)


def test_bench_says_when_bf16_is_emulated(capsys):
    argv = ["bench", "--model", "resnet10t", "--image-size", "32", "--batch-size", "2"]
    assert main([*argv, "--steps", "1", "--warmup", "0", "--amp", "bf16", "--json"]) == 0
    r = json.loads(capsys.readouterr().out)
    assert r["amp"] == "bf16"
    assert (r["precision_note"] is None) == cpu_has_bf16_instructions()
    assert main([*argv, "--steps", "1", "--warmup", "0", "--amp", "off", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["precision_note"] is None
