"""Ingest benchmark: a 300-slice 512x512 CT over one association, pacs-triage vs DCMTK storescp.

Both receivers run as their own process on loopback in the same run; storescu sends the same
files to each (best of 3). pacs-triage runs with durability on (fsync + atomic rename before
success); storescp runs as DCMTK ships it (TCP_NODELAY=1, no fsync). Then the stable -> pushed
latency of a small study without image analysis, with Orthanc as the PACS.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from dicomgen import SeriesSpec, StudySpec, postop_three_series, write_study  # noqa: E402
from peers import Orthanc, free_port, service_ready, wait_for  # noqa: E402

SLICES = int(os.environ.get("BENCH_SLICES", 300))
ROUNDS = 3


def send(port: int, files: list[Path]) -> float:
    start = time.perf_counter()
    subprocess.run(["storescu", "-aec", "PACSTRIAGE", "127.0.0.1", str(port), *map(str, files)], check=True,
                   capture_output=True)
    return time.perf_counter() - start


def storescp(outdir: Path) -> tuple[subprocess.Popen, int]:
    port = free_port()
    outdir.mkdir(parents=True, exist_ok=True)
    proc = subprocess.Popen(["storescp", "-od", str(outdir), "-aet", "PACSTRIAGE", str(port)],
                            env=dict(os.environ, TCP_NODELAY="1"), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_for(lambda: subprocess.run(["echoscu", "127.0.0.1", str(port)], capture_output=True).returncode == 0,
             what="storescp")
    return proc, port


def serve(data: Path, *extra: str, stable_after: float = 10) -> tuple[subprocess.Popen, int, int]:
    port, http = free_port(), free_port()
    proc = subprocess.Popen([sys.executable, "-m", "agent.cli", "serve", "--data-dir", str(data), "--port", str(port),
                             "--http-port", str(http), "--stable-after", str(stable_after), *extra],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    wait_for(lambda: service_ready(http, proc), timeout=30, what="pacs-triage serve")
    return proc, port, http


def stop(proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()


def ingest(tmp: Path) -> None:
    spec = StudySpec(series=[SeriesSpec("CT", "AX BONE 0.6", SLICES, rows=512, columns=512)])
    files = write_study(tmp / "ct", spec)
    size = sum(f.stat().st_size for f in files) / 1e6
    results = {}
    for name in ("storescp", "pacs-triage"):
        times = []
        for r in range(ROUNDS):
            out = tmp / f"{name}-{r}"
            if name == "storescp":
                proc, port = storescp(out)
            else:
                proc, port, _ = serve(out, "--no-workers", stable_after=600)
            try:
                times.append(send(port, files))
            finally:
                stop(proc)
            shutil.rmtree(out, ignore_errors=True)
        results[name] = min(times)
        print(f"ingest {name:12s}: best {min(times):6.2f} s of {ROUNDS}  ({size / min(times):6.1f} MB/s)")
    ratio = results["pacs-triage"] / results["storescp"]
    print(f"ingest ratio pacs-triage / storescp = {ratio:.2f} (target <= 1.0; {SLICES} x 512x512 CT, {size:.0f} MB)")


def latency(tmp: Path) -> None:
    orthanc = Orthanc(tmp / "orthanc").start()
    stable_after = 2.0
    proc, port, _ = serve(tmp / "svc", "--pacs", orthanc.node, stable_after=stable_after)
    try:
        samples = []
        for i in range(5):
            spec = postop_three_series(accession=f"BENCH{i}")
            files = write_study(tmp / f"lat{i}", spec)
            send(port, files)
            sent = time.perf_counter()
            wait_for(lambda: orthanc.find_instances(StudyInstanceUID=spec.study_uid, Modality="SR")
                     or [i for i in orthanc.find_instances(StudyInstanceUID=spec.study_uid)
                         if "SR" in str(orthanc.get(f"/series/{i['ParentSeries']}")["MainDicomTags"].get("Modality"))],
                     timeout=60, interval=0.02, what="SR")
            samples.append(time.perf_counter() - sent - stable_after)
        samples.sort()
        print("samples (s):", " ".join(f"{x:.2f}" for x in samples))
        print(f"stable -> SR in PACS: median {samples[len(samples) // 2]:.2f} s, max {samples[-1]:.2f} s "
              f"after the {stable_after:.0f} s quiet period (target <= 1 s; no image analysis)")
    finally:
        stop(proc)
        orthanc.stop()


if __name__ == "__main__":
    with tempfile.TemporaryDirectory(prefix="bench-ingest-") as d:
        ingest(Path(d))
        latency(Path(d))
