"""TensorFlow as an oracle for tf.train.Example parsing, in a child process (TF itself may
crash on hostile bytes: TF 2.21 segfaults in ``parse_single_example`` on a bytes value whose
length varint is 2**64 - 1, so each answer comes from a worker that is restarted if it dies).

Protocol: one request per line, ``<hex example> <key> <int|bytes>``; one answer per line:
``ERR`` (TF refuses) or ``OK <hex of the int64 / bytes value>``, as slim reads its keys:
``tf.io.parse_single_example(blob, {key: FixedLenFeature([], dtype)})``.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

TESTS = Path(__file__).resolve().parents[1]


class Oracle:
    """``oracle(blob, key, kind)`` -> ``("ERR", None)``, ``("OK", value)`` or ``("CRASH", None)``."""

    def __init__(self):
        self._proc = None

    def _start(self):
        env = dict(os.environ, PYTHONPATH=str(TESTS), TF_CPP_MIN_LOG_LEVEL="3")
        self._proc = subprocess.Popen(
            [sys.executable, "-m", "fuzz.tf_oracle"],
            cwd=TESTS,
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        if self._proc.stdout.readline().strip() != "READY":
            raise RuntimeError("the TensorFlow oracle did not start")

    def __call__(self, blob: bytes, key: str, kind: str):
        if self._proc is None or self._proc.poll() is not None:
            self._start()
        self._proc.stdin.write(f"{blob.hex() or '-'} {key} {kind}\n")
        self._proc.stdin.flush()
        line = self._proc.stdout.readline()
        if not line:  # the worker died on this input
            self._proc.wait()
            self._proc = None
            return "CRASH", None
        status, _, value = line.strip().partition(" ")
        if status == "ERR":
            return "ERR", None
        raw = bytes.fromhex(value)
        return "OK", int.from_bytes(raw, "little", signed=True) if kind == "int" else raw

    def close(self):
        if self._proc is not None and self._proc.poll() is None:
            self._proc.stdin.close()
            self._proc.wait(timeout=30)


def _serve() -> None:
    from tf_compat import import_tf

    tf = import_tf()
    specs = {"int": tf.int64, "bytes": tf.string}
    print("READY", flush=True)
    for line in sys.stdin:
        hexblob, key, kind = line.split()
        blob = b"" if hexblob == "-" else bytes.fromhex(hexblob)
        try:
            spec = {key: tf.io.FixedLenFeature([], specs[kind])}
            value = tf.io.parse_single_example(blob, spec)[key].numpy()
        except Exception:  # noqa: BLE001 - any refusal is the answer "ERR"
            print("ERR", flush=True)
            continue
        raw = int(value).to_bytes(8, "little", signed=True) if kind == "int" else bytes(value)
        print("OK", raw.hex(), flush=True)


if __name__ == "__main__":
    _serve()
