"""A small fuzzing harness on hypothesis: mutate valid files, run a parser, catch what escapes.

A :class:`Target` is a parser entry point: valid seed inputs, a ``run(data, folder)`` that feeds
one input to the parser (writing files into ``folder`` as needed), optionally its own
structure-aware mutator, and the exception types it may raise (classzoo's ``UserError`` by
default). :func:`fuzz` runs a target in a child process (``python -m fuzz.harness``) under a
memory cap (``RLIMIT_AS``), with a per-input time limit (``SIGALRM``), for at least ``inputs``
inputs or until ``seconds`` pass, and returns a :class:`Report`. A finding is any other
exception, any input over the time limit, or a MemoryError.

To add a target (e.g. tests/fuzz/test_fuzz_checkpoints.py)::

    CKPT = Target("classzoo-checkpoint", seeds=lambda: [...], run=load_one)
    def test_fuzz_ckpt():
        report = fuzz("fuzz.test_fuzz_checkpoints:CKPT", inputs=10_000, seconds=40)
        assert report.ok, report.summary()
"""

from __future__ import annotations

import importlib
import json
import logging
import os
import random
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from classzoo.errors import UserError

TESTS = Path(__file__).resolve().parents[1]
INTERESTING = [0, 1, 2, 0x7F, 0x80, 0xFF, 0x7FFF, 0xFFFF, 2**31 - 1, 2**31, 2**32 - 1, 2**32,
               2**40, 2**53, 2**63 - 1, 2**63, 2**64 - 1]  # fmt: skip


class InputTimeout(BaseException):
    """Raised by the alarm when one input runs past the time limit."""


@dataclass(frozen=True)
class Target:
    name: str
    seeds: Callable[[], list[bytes]]
    run: Callable[[bytes, Path], object]
    mutate: Callable[[bytes, random.Random], bytes] | None = None  # default: byte mutations
    allowed: tuple[type[BaseException], ...] = (UserError,)
    setup: Callable[[], object] | None = None  # heavy imports (torch), run before the memory cap


@dataclass
class Report:
    target: str
    inputs: int = 0
    seconds: float = 0.0
    cpu_seconds: float = 0.0
    slowest_input_s: float = 0.0
    peak_rss_mb: float = 0.0
    finding_count: int = 0  # inputs that failed; ``findings`` keeps one per distinct signature
    findings: list[dict] = field(default_factory=list)
    error: str = ""

    @property
    def ok(self) -> bool:
        return not self.finding_count and not self.error

    def summary(self) -> str:
        head = (
            f"{self.target}: {self.inputs} inputs in {self.seconds:.1f} s "
            f"({self.cpu_seconds:.1f} s CPU), "
            f"{self.finding_count} findings, slowest input {self.slowest_input_s:.3f} s, "
            f"peak RSS {self.peak_rss_mb:.0f} MB"
        )
        lines = [head] + [
            f"  {f['exception']}: input {f['input_hex'][:160]}" for f in self.findings
        ]
        if self.error:
            lines.append("  harness error: " + self.error[-2000:])
        return "\n".join(lines)


# ---- mutations ----------------------------------------------------------------------------------


def varint_bytes(value: int) -> bytes:
    out = bytearray()
    while True:
        out.append((value & 0x7F) | (0x80 if value >> 7 else 0))
        value >>= 7
        if not value:
            return bytes(out)


def interesting(rng: random.Random) -> int:
    return (
        rng.choice(INTERESTING) if rng.random() < 0.7 else rng.getrandbits(rng.choice([8, 32, 70]))
    )


def mutate_bytes(data: bytes, rng: random.Random, max_ops: int = 6) -> bytes:
    """Byte-level mutations: flips, interesting values (as bytes and as varints), inserts,
    deletes, duplicated and moved chunks, truncation."""
    buf = bytearray(data)
    for _ in range(rng.randint(1, max_ops)):
        n = len(buf)
        op = rng.randrange(8)
        at = rng.randrange(n) if n else 0
        if op == 0 and n:  # flip one bit
            buf[at] ^= 1 << rng.randrange(8)
        elif op == 1 and n:  # set a byte
            buf[at] = rng.choice([0, 1, 0x7F, 0x80, 0xFF, rng.randrange(256)])
        elif op == 2:  # an interesting integer as a varint (incl. 10- and 11-byte ones)
            out = varint_bytes(interesting(rng))
            buf[at : at + rng.randint(0, len(out))] = out
        elif op == 3:  # an interesting integer as fixed32 / fixed64
            size = rng.choice([4, 8])
            buf[at : at + size] = (interesting(rng) % (1 << (8 * size))).to_bytes(size, "little")
        elif op == 4:  # insert random bytes
            buf[at:at] = rng.randbytes(rng.randint(1, 16))
        elif op == 5 and n:  # delete a range
            del buf[at : at + rng.randint(1, 16)]
        elif op == 6 and n:  # duplicate a chunk somewhere (repeated fields, entries)
            size = rng.randint(1, min(64, n - at))
            to = rng.randint(0, n)
            buf[to:to] = buf[at : at + size]
        elif op == 7 and n:  # truncate
            del buf[at:]
    return bytes(buf)


# ---- the child process --------------------------------------------------------------------------


def _load(ref: str) -> Target:
    module, _, name = ref.partition(":")
    return getattr(importlib.import_module(module), name)


def _cap_memory(mem_mb: int) -> None:
    """RLIMIT_AS = what the process maps now + ``mem_mb``: a runaway allocation fails fast."""
    with open("/proc/self/statm") as f:
        pages = int(f.read().split()[0])
    now = pages * os.sysconf("SC_PAGE_SIZE")
    limit = now + mem_mb * (1 << 20)
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))


def _alarm(_signum, _frame):
    raise InputTimeout


def run_child(ref: str, inputs: int, seconds: float, per_input_s: float, mem_mb: int) -> Report:
    logging.disable(logging.CRITICAL)  # parsers log skipped records; thousands of lines here
    target = _load(ref)
    report = Report(target.name)
    seeds = target.seeds()
    mutate = target.mutate or mutate_bytes
    shm = "/dev/shm" if os.access("/dev/shm", os.W_OK) else None  # tmpfs: no disk in the loop
    folder = Path(tempfile.mkdtemp(prefix=f"fuzz-{target.name}-", dir=shm))
    if target.setup is not None:
        target.setup()
    _cap_memory(mem_mb)
    signal.signal(signal.SIGALRM, _alarm)
    start, cpu_start = time.monotonic(), time.process_time()
    seen: set[str] = set()

    def one(buf: bytes) -> None:
        t0 = time.monotonic()
        signal.setitimer(signal.ITIMER_REAL, per_input_s)
        try:
            target.run(buf, folder)
        except target.allowed:
            pass
        except (Exception, InputTimeout) as exc:  # noqa: BLE001 - a finding, recorded below
            frames = traceback.extract_tb(exc.__traceback__)
            where = f"{frames[-1].filename}:{frames[-1].lineno}" if frames else "?"
            signature = f"{type(exc).__name__} at {where}"
            report.finding_count += 1
            if signature not in seen and len(report.findings) < 20:
                seen.add(signature)
                report.findings.append(
                    {
                        "exception": f"{signature}: {str(exc)[:300]}",
                        "input_hex": buf.hex(),
                        "traceback": traceback.format_exc()[-3000:],
                    }
                )
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
            report.inputs += 1
            report.slowest_input_s = max(report.slowest_input_s, time.monotonic() - t0)

    @settings(
        max_examples=1000,
        database=None,
        deadline=None,
        phases=[Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(st.sampled_from(seeds), st.integers(0, 2**64 - 1))
    def chunk(seed: bytes, entropy: int) -> None:
        # hypothesis picks the seed file and the entropy; the mutator spends it (one draw each
        # keeps hypothesis's own cost at ~0.1 ms per input instead of ~1 ms per decision)
        rng = random.Random(entropy)
        one(mutate(seed, rng) if rng.randrange(16) else seed)

    while report.inputs < inputs and time.monotonic() - start < seconds:
        chunk()
    report.seconds = time.monotonic() - start
    report.cpu_seconds = time.process_time() - cpu_start
    shutil.rmtree(folder, ignore_errors=True)
    report.peak_rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return report


def fuzz(
    ref: str,
    inputs: int = 10_000,
    seconds: float = 60.0,
    per_input_s: float = 5.0,
    mem_mb: int = 1024,
) -> Report:
    """Fuzz target ``ref`` ("module:NAME", importable from tests/) in a child process."""
    cmd = [sys.executable, "-m", "fuzz.harness", ref, str(inputs), str(seconds)]
    cmd += [str(per_input_s), str(mem_mb)]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(TESTS), str(TESTS.parent / "src")]))
    try:
        proc = subprocess.run(
            cmd, cwd=TESTS, env=env, capture_output=True, text=True, timeout=seconds + 120
        )
    except subprocess.TimeoutExpired as exc:
        return Report(ref, error=f"child ran past {exc.timeout} s (a hang the alarm missed)")
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if proc.returncode != 0 or not lines:
        return Report(ref, error=f"child exited {proc.returncode}: {proc.stderr[-3000:]}")
    return Report(**json.loads(lines[-1]))


if __name__ == "__main__":
    ref, n, secs, per_input, mem = sys.argv[1:6]
    result = run_child(ref, int(n), float(secs), float(per_input), int(mem))
    print(json.dumps(asdict(result)))
