"""Load benchmark (issue 14): pacs-triage against DCMTK storescp in the same run, on this machine.

(a) one association, a CT of BENCH_CT_SLICES (300) 512x512 slices: wall time vs storescp;
(b) 8 concurrent senders (a BENCH_SMALL_CT_SLICES-slice CT each): aggregate MB/s vs `storescp --fork`;
(c) sustained load: BENCH_STUDIES (45) mixed studies (MR 3 series, CT 300 slices, DX) at
    BENCH_RATE (60) studies/min from 8 senders, with Orthanc as the PACS: end-to-end latency
    from the last instance received to the SR pushed (from the audit trail), p50/p95/p99/max,
    and the triage queue depth over time;
(d) listener RSS while a BENCH_LARGE_MB (2048) MB study arrives over one association;
(e) idle CPU of `serve` (and its Redis and listener processes) over BENCH_IDLE_SECONDS (60).

pacs-triage runs with durability on (fsync + rename before success, audit on), as shipped;
storescp as DCMTK ships it (no fsync). Prints a table and writes it to bench/results.md, replacing the
previous run's table (between its latest-run markers) and keeping the sections written below it.

BENCH_A_TREES / BENCH_B_TREES=/path/to/checkout[,...]: (a) / (b) also serve from those code trees in
the same interleaved rounds (old code against new in one run, on a shared machine).
BENCH_C_TREES=/path/to/checkout[,...] with BENCH_C_ROUNDS=N: (c) runs N rounds on the same generated
studies, each round serving from this tree and those, in alternating order (AB BA AB ...).
BENCH_NO_RESULTS=1: print the table, leave bench/results.md as it is.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from dicomgen import SeriesSpec, StudySpec, write_study  # noqa: E402
from peers import Orthanc, free_port, service_ready, wait_for  # noqa: E402

CT_SLICES = int(os.environ.get("BENCH_CT_SLICES", 300))
SMALL_CT_SLICES = int(os.environ.get("BENCH_SMALL_CT_SLICES", 60))
SENDERS = 8
ROUNDS = int(os.environ.get("BENCH_ROUNDS", 3))  # (a) and (b): rounds, interleaved; medians reported
STUDIES = int(os.environ.get("BENCH_STUDIES", 45))
RATE = float(os.environ.get("BENCH_RATE", 60))  # studies per minute
STABLE_AFTER = float(os.environ.get("BENCH_STABLE_AFTER", 10))
LARGE_MB = int(os.environ.get("BENCH_LARGE_MB", 2048))
IDLE_SECONDS = float(os.environ.get("BENCH_IDLE_SECONDS", 60))
RESULTS = ROOT / "bench" / "results.md"

rows: list[tuple[str, str, str]] = []  # (benchmark, measured, target)


def row(name: str, measured: str, target: str) -> None:
    rows.append((name, measured, target))
    print(f"  -> {name}: {measured}  (target {target})", flush=True)


def mb(files) -> float:
    return sum(Path(f).stat().st_size for f in files) / 1e6


def storescu(port: int, files) -> float:
    start = time.perf_counter()
    subprocess.run(["storescu", "-aec", "PACSTRIAGE", "127.0.0.1", str(port), *map(str, files)], check=True,
                   capture_output=True)
    return time.perf_counter() - start


def storescp(outdir: Path, fork: bool = False) -> tuple[subprocess.Popen, int]:
    port = free_port()
    outdir.mkdir(parents=True, exist_ok=True)
    proc = subprocess.Popen(["storescp", *(["--fork"] if fork else []), "-od", str(outdir), "-aet", "PACSTRIAGE",
                             str(port)], env=dict(os.environ, TCP_NODELAY="1"), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    wait_for(lambda: subprocess.run(["echoscu", "127.0.0.1", str(port)], capture_output=True).returncode == 0,
             what="storescp")
    return proc, port


def serve(data: Path, *extra: str, stable_after: float = 600, env_extra: dict | None = None,
          log: Path | None = None, tree: Path = ROOT) -> tuple[subprocess.Popen, int, int]:
    port, http = free_port(), free_port()
    env = dict(os.environ, **(env_extra or {}))
    env.pop("PACS_TRIAGE_REDIS_URL", None)
    out = open(log, "wb") if log else subprocess.DEVNULL
    proc = subprocess.Popen([sys.executable, "-m", "agent.cli", "serve", "--data-dir", str(data), "--port", str(port),
                             "--http-port", str(http), "--stable-after", str(stable_after), *extra],
                            stdout=out, stderr=subprocess.STDOUT if log else subprocess.DEVNULL, env=env, cwd=tree)
    wait_for(lambda: service_ready(http, proc), timeout=60, what="pacs-triage serve")
    time.sleep(2)  # listener children bound
    return proc, port, http


def stop(proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(60)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def descendants(pid: int) -> list[int]:
    out = []
    try:
        kids = [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return out
    for k in kids:
        out += [k, *descendants(k)]
    return out


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_text().replace("\0", " ")
    except OSError:
        return ""


def rss_mb(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def cpu_seconds(pid: int) -> float:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def scrape(http: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{http}/metrics", timeout=10) as r:
        return r.read().decode()


def gauge(text: str, name: str) -> float:
    m = re.search(rf"^{re.escape(name)} (\S+)$", text, re.M)
    return float(m.group(1)) if m else 0.0


def ct(accession: str, slices: int, rows_: int = 512) -> StudySpec:
    return StudySpec(accession=accession, patient_id="P" + accession, reason="Contrôle post-opératoire",
                     series=[SeriesSpec("CT", "AX BONE 0.6", slices, rows=rows_, columns=rows_)])


# --- (a) one association --------------------------------------------------------------

def tree_cpu(proc: subprocess.Popen) -> dict[int, float]:
    """CPU-seconds so far of a receiver and its children (embedded Redis left out)."""
    pids = [proc.pid] + [p for p in descendants(proc.pid) if "redis-server" not in cmdline(p)]
    return {p: cpu_seconds(p) for p in pids}


def single(tmp: Path) -> None:
    print(f"(a) one association: {CT_SLICES} x 512x512 CT, {ROUNDS} interleaved rounds", flush=True)
    files = write_study(tmp / "a", ct("BENCH-A", CT_SLICES))
    size = mb(files)
    # BENCH_A_TREES=/path/a,/path/b: the same rounds also serve from other code trees (e.g. a checkout
    # of main), interleaved, to compare code in one run; "pacs-triage" is this tree.
    trees = {"pacs-triage": ROOT, **{f"pacs-triage@{t}": Path(t) for t in os.environ.get("BENCH_A_TREES", "").split(",")
                                     if t and Path(t).resolve() != ROOT}}
    times: dict[str, list[float]] = {"storescp": [], **{n: [] for n in trees}}
    cpu: dict[str, list[float]] = {n: [] for n in times}
    for r in range(ROUNDS):
        for name in times:
            out = tmp / f"a-{name.replace('/', '_')}-{r}"
            proc, port = storescp(out) if name == "storescp" else serve(out, "--no-workers", tree=trees[name])[:2]
            try:
                before = tree_cpu(proc)
                times[name].append(storescu(port, files))
                cpu[name].append(sum(tree_cpu(proc).values()) - sum(before.values()))
            finally:
                stop(proc)
            shutil.rmtree(out, ignore_errors=True)
    ratios = [p / s for p, s in zip(times["pacs-triage"], times["storescp"])]
    for name in times:
        print(f"    {name}: {' '.join(f'{t:.2f}' for t in times[name])} s, median "
              f"{statistics.median(times[name]):.2f} s; receiver CPU median {statistics.median(cpu[name]):.2f} s",
              flush=True)
        if name != "storescp":
            rs = [p / s for p, s in zip(times[name], times["storescp"])]
            print(f"    {name} ratio per round: {' '.join(f'{x:.2f}' for x in rs)}, median "
                  f"{statistics.median(rs):.2f}", flush=True)
    print(f"    load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}", flush=True)
    med = {n: statistics.median(v) for n, v in times.items()}
    row(f"(a) one association, {CT_SLICES}×512×512 CT ({size:.0f} MB), fsync on, vs `storescp`",
        f"ratio **{statistics.median(ratios):.2f}** (median of {ROUNDS} interleaved rounds: "
        f"{med['pacs-triage']:.2f} s vs {med['storescp']:.2f} s; receiver CPU "
        f"{statistics.median(cpu['pacs-triage']):.2f} s vs {statistics.median(cpu['storescp']):.2f} s)",
        "≤ 1.5, then ≤ 1.0")
    shutil.rmtree(tmp / "a", ignore_errors=True)


# --- (b) 8 concurrent senders -----------------------------------------------------------

def concurrent(tmp: Path) -> None:
    print(f"(b) {SENDERS} concurrent senders, {SMALL_CT_SLICES}-slice CT each", flush=True)
    studies = [write_study(tmp / f"b{n}", ct(f"BENCH-B{n}", SMALL_CT_SLICES)) for n in range(SENDERS)]
    total = sum(mb(f) for f in studies)
    rates: dict[str, list[float]] = {"storescp --fork": [], "pacs-triage": []}
    for n in filter(None, os.environ.get("BENCH_B_LISTENERS", "").split(",")):  # e.g. "4,8": also --listeners N
        rates[f"pacs-triage --listeners {n}"] = []
    if os.environ.get("BENCH_B_REUSEPORT"):  # also the kernel's SO_REUSEPORT spread instead of balanced dispatch
        rates["pacs-triage reuseport"] = []
    for t in filter(None, os.environ.get("BENCH_B_TREES", "").split(",")):  # other code trees, same rounds
        rates[f"pacs-triage@{t}"] = []
    shares = []
    for r in range(ROUNDS):
        for name in rates:
            out = tmp / f"b-{name.split()[0].replace('/', '_')}-{r}"
            if name.startswith("storescp"):
                proc, port = storescp(out, fork=True)
            elif "@" in name:
                proc, port, _ = serve(out, "--no-workers", tree=Path(name.split("@", 1)[1]))
            elif name.endswith("reuseport"):
                proc, port, _ = serve(out, "--no-workers", env_extra={"PACS_TRIAGE_LISTENER_DISPATCH": "reuseport"})
            else:
                proc, port, _ = serve(out, "--no-workers", *name.split()[1:])
            try:
                before = tree_cpu(proc)
                start = time.perf_counter()
                with ThreadPoolExecutor(SENDERS) as pool:
                    list(pool.map(lambda f: storescu(port, f), studies))
                wall = time.perf_counter() - start
                after = tree_cpu(proc)
            finally:
                stop(proc)
            shutil.rmtree(out, ignore_errors=True)
            rates[name].append(total / wall)
            used = {p: after[p] - before.get(p, 0.0) for p in after if after[p] - before.get(p, 0.0) > 0.05}
            if name.startswith("pacs-triage") and name != "pacs-triage":
                print(f"    {name}: ratio vs storescp --fork this round "
                      f"{(total / wall) / rates['storescp --fork'][-1]:.2f}", flush=True)
            if name == "pacs-triage":
                shares.append(sorted(used.values(), reverse=True))
            print(f"    {name}: {wall:.2f} s, {total / wall:.0f} MB/s; CPU-s per process "
                  f"{' '.join(f'{v:.2f}' for v in sorted(used.values(), reverse=True))} (of {wall:.2f} s)",
                  flush=True)
    ours, theirs = statistics.median(rates["pacs-triage"]), statistics.median(rates["storescp --fork"])
    ratio = statistics.median(o / t for o, t in zip(rates["pacs-triage"], rates["storescp --fork"]))
    listeners = 2 * len(os.sched_getaffinity(0))  # serve's default: two per core
    cpu_note = "; ".join("/".join(f"{v:.1f}" for v in s) for s in shares)
    row(f"(b) {SENDERS} senders at once, {total:.0f} MB, aggregate (pacs-triage: {listeners} listener processes)",
        f"**{ours:.0f} MB/s** vs `storescp --fork` {theirs:.0f} MB/s (ratio {ratio:.2f}; medians of {ROUNDS} "
        f"interleaved rounds; CPU-s of the listener processes per round {cpu_note})", "≥ storescp's")
    if "pacs-triage reuseport" in rates:
        alt = statistics.median(o / t for o, t in zip(rates["pacs-triage reuseport"], rates["storescp --fork"]))
        row("(b) the same, connections spread by the kernel (`listener_dispatch = \"reuseport\"`)",
            f"{statistics.median(rates['pacs-triage reuseport']):.0f} MB/s (ratio {alt:.2f}, same rounds)",
            "≥ storescp's")
    for f in studies:
        shutil.rmtree(Path(f[0]).parent, ignore_errors=True)


# --- (c) sustained load ------------------------------------------------------------------

def sustained(tmp: Path) -> None:
    print(f"(c) sustained: {STUDIES} mixed studies at {RATE:.0f}/min from {SENDERS} senders, "
          f"quiet period {STABLE_AFTER:.0f} s", flush=True)
    specs = []
    for n in range(STUDIES):
        kind = ("MR", "CT", "DX")[n % 3]
        if kind == "MR":
            spec = StudySpec(accession=f"BENCH-C{n}", patient_id=f"PC{n}", reason="Lombalgie post-opératoire",
                             series=[SeriesSpec("MR", d, 20, rows=256, columns=256)
                                     for d in ("SAG T2 TSE", "SAG T1 TSE", "AX T2 TSE")])
        elif kind == "CT":
            spec = ct(f"BENCH-C{n}", CT_SLICES)
        else:
            spec = StudySpec(accession=f"BENCH-C{n}", patient_id=f"PC{n}", reason="Contrôle arthrodèse",
                             series=[SeriesSpec("DX", "RACHIS LOMBAIRE FACE", 1, rows=1024, columns=1024),
                                     SeriesSpec("DX", "RACHIS LOMBAIRE PROFIL", 1, rows=1024, columns=1024)])
        specs.append((kind, spec, write_study(tmp / f"c{n}", spec)))
    # BENCH_C_TREES=/path/a,/path/b: each round also serves from those code trees (e.g. a checkout of
    # main), on the same generated studies, alternating (old code against new in one run).
    trees = {"pacs-triage": ROOT, **{f"pacs-triage@{t}": Path(t) for t in os.environ.get("BENCH_C_TREES", "").split(",")
                                     if t and Path(t).resolve() != ROOT}}
    c_rounds = int(os.environ.get("BENCH_C_ROUNDS", 1))
    for r in range(c_rounds):
        for name, tree in (trees.items() if r % 2 == 0 else reversed(list(trees.items()))):
            label = name if c_rounds == 1 and len(trees) == 1 else f"{name} round {r + 1}"
            _sustained_run(tmp / f"c-{r}-{name.replace('/', '_')}", specs, tree, label)
    for _, spec, files in specs:
        shutil.rmtree(Path(files[0]).parent, ignore_errors=True)


def _sustained_run(tmp: Path, specs, tree: Path, label: str) -> None:
    print(f"  (c) {label}: load average before {' '.join(f'{x:.2f}' for x in os.getloadavg())}", flush=True)
    orthanc = Orthanc(tmp / "orthanc").start()
    data = tmp / "c-svc"
    serve_log = tmp / "c-serve.log"
    proc, port, http = serve(data, "--pacs", orthanc.node, stable_after=STABLE_AFTER, log=serve_log, tree=tree)
    depth: list[tuple[float, float, float]] = []
    done = threading.Event()

    def sample():
        t0 = time.monotonic()
        while not done.is_set():
            try:
                text = scrape(http)
                depth.append((time.monotonic() - t0, gauge(text, 'pacs_triage_queue_depth{queue="triage"}'),
                              gauge(text, "pacs_triage_studies_pending")))
            except OSError:
                pass
            done.wait(2.0)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    failures = []
    try:
        start = time.monotonic()

        def send(item):
            n, (kind, spec, files) = item
            time.sleep(max(0.0, start + n * 60.0 / RATE - time.monotonic()))
            try:
                storescu(port, files)
            except subprocess.CalledProcessError:
                failures.append(spec.accession)

        with ThreadPoolExecutor(SENDERS) as pool:
            list(pool.map(send, enumerate(specs)))
        sent_for = time.monotonic() - start
        uids = {spec.study_uid: kind for kind, spec, _ in specs}

        def pushed():
            events = audit_events(data)
            got = {e["study"] for e in events if e["event"] == "pushed" and e.get("kind") == "pacs"}
            return events if set(uids) <= got else None

        events = wait_for(pushed, timeout=1800, interval=2, what="every SR pushed")
    finally:
        done.set()
        stop(proc)
        orthanc.stop()
    last_received, first_pushed = {}, {}
    for e in events:
        if e["event"] == "received":
            last_received[e["study"]] = max(last_received.get(e["study"], 0), e["at"])
        elif e["event"] == "pushed" and e.get("kind") == "pacs":
            first_pushed[e["study"]] = min(first_pushed.get(e["study"], float("inf")), e["at"])
    lat = sorted(first_pushed[u] - last_received[u] for u in uids)

    def pct(p):
        return lat[min(len(lat) - 1, int(round(p / 100 * (len(lat) - 1))))]

    by_kind = {k: statistics.median(first_pushed[u] - last_received[u] for u in uids if uids[u] == k)
               for k in ("MR", "CT", "DX")}
    print(f"    sent in {sent_for:.0f} s; refused {len(failures)}; latency p50 {pct(50):.1f} p95 {pct(95):.1f} "
          f"p99 {pct(99):.1f} max {lat[-1]:.1f} s; median by kind {by_kind}", flush=True)
    stages = stage_table(serve_log, uids)
    print(stages, flush=True)
    log_text = serve_log.read_text(errors="replace") if serve_log.exists() else ""
    prepared = {k: log_text.count(p) for k, p in (("used", "prepared triage used"),
                                                   ("discarded", "prepared triage discarded"),
                                                   ("none ready", "no prepared triage"))}
    if any(prepared.values()):  # a tree with `prepare_ahead`: what became of the preparations
        print("    triages prepared ahead: " + ", ".join(f"{k} {v}" for k, v in prepared.items()), flush=True)
    series = " ".join(f"{t:.0f}s:{q:.0f}/{p:.0f}" for t, q, p in depth[::5])
    print(f"    queue depth (t: triage queue/pending studies): {series}", flush=True)
    print(f"    load average after {' '.join(f'{x:.2f}' for x in os.getloadavg())}", flush=True)
    row(f"(c) {label}: sustained: {STUDIES} studies (⅓ MR 3×20, ⅓ CT {CT_SLICES} slices, ⅓ DX 2) at {RATE:.0f}/min, "
        f"{SENDERS} senders, quiet period {STABLE_AFTER:.0f} s; last instance → SR pushed to Orthanc",
        f"p50 **{pct(50):.1f} s**, p95 **{pct(95):.1f} s**, p99 {pct(99):.1f} s, max {lat[-1]:.1f} s "
        f"(median MR {by_kind['MR']:.1f}, CT {by_kind['CT']:.1f}, DX {by_kind['DX']:.1f} s); "
        f"max triage queue {max((q for _, q, _ in depth), default=0):.0f}, "
        f"max pending {max((p for _, _, p in depth), default=0):.0f}; refused {len(failures)}",
        f"p95 ≤ quiet period + 1 s = {STABLE_AFTER + 1:.0f} s")
    rows.append(("", f"queue depth over time (s: triage queue / studies pending): {series}", ""))
    rows.append(("", "stages after the quiet period, median / p95 (s): " + stages.replace("\n", "; "), ""))
    if os.environ.get("BENCH_KEEP_LOGS"):  # a directory: the serve log of each run is copied there
        keep = Path(os.environ["BENCH_KEEP_LOGS"])
        keep.mkdir(parents=True, exist_ok=True)
        shutil.copy(serve_log, keep / (tmp.name + ".log"))
    shutil.rmtree(tmp, ignore_errors=True)


STAGE_LINE = re.compile(r"stages of study (\S+): watcher (\S+) s after due, queue (\S+) s, triage (\S+) s")
PUSH_LINE = re.compile(r"stages of study (\S+): pacs delivery queue (\S+) s, push (\S+) s")


def stage_table(log: Path, uids: dict[str, str]) -> str:
    """Median / p95 per kind of each stage after the quiet period (the workers' stage lines)."""
    stages: dict[str, dict[str, list[float]]] = {}
    text = log.read_text(errors="replace") if log.exists() else ""
    for pattern, names in ((STAGE_LINE, ("watcher", "queue", "triage")), (PUSH_LINE, ("push queue", "push"))):
        for m in pattern.finditer(text):
            kind = uids.get(m.group(1))
            if kind is None:
                continue
            for name, value in zip(names, m.groups()[1:]):
                stages.setdefault(kind, {}).setdefault(name, []).append(float(value))

    def q(values, p):
        values = sorted(values)
        return values[min(len(values) - 1, int(round(p / 100 * (len(values) - 1))))]

    return "\n".join(f"{kind}: " + ", ".join(f"{name} {statistics.median(v):.2f}/{q(v, 95):.2f}"
                                              for name, v in by.items()) for kind, by in sorted(stages.items()))


def audit_events(data: Path) -> list[dict]:
    events = []
    for path in (data / "audit").rglob("*.jsonl"):
        for line in path.read_text().splitlines():
            try:
                events.append(json.loads(line))
            except ValueError:
                continue
    return events


# --- (d) RSS during a large study --------------------------------------------------------

def large(tmp: Path) -> None:
    slices = max(1, LARGE_MB * 1024 * 1024 // (1024 * 1024 * 2 + 2048))
    print(f"(d) listener RSS while a {LARGE_MB} MB study ({slices} x 1024x1024) arrives", flush=True)
    files = write_study(tmp / "d", ct("BENCH-D", slices, rows_=1024))
    size = mb(files)
    proc, port, _ = serve(tmp / "d-svc", "--no-workers")
    peak = {"rss": 0.0}
    done = threading.Event()
    pids = [proc.pid] + [p for p in descendants(proc.pid) if "redis-server" not in cmdline(p)]

    def sample():
        while not done.is_set():
            peak["rss"] = max([peak["rss"]] + [rss_mb(p) for p in pids])
            done.wait(0.2)

    before = max(rss_mb(p) for p in pids)
    t = threading.Thread(target=sample, daemon=True)
    t.start()
    try:
        took = storescu(port, files)
    finally:
        done.set()
        t.join()
        stop(proc)
    print(f"    {size:.0f} MB in {took:.1f} s; RSS before {before:.0f} MB, peak {peak['rss']:.0f} MB", flush=True)
    row(f"(d) listener RSS while a {size / 1000:.1f} GB study arrives ({slices} × 1024×1024, one association)",
        f"peak **{peak['rss']:.0f} MB** (idle {before:.0f} MB; {size / took:.0f} MB/s)", "≤ 300 MB")
    shutil.rmtree(tmp / "d", ignore_errors=True)
    shutil.rmtree(tmp / "d-svc", ignore_errors=True)


# --- (e) idle --------------------------------------------------------------------------

def idle(tmp: Path) -> None:
    print(f"(e) idle CPU over {IDLE_SECONDS:.0f} s", flush=True)
    proc, _, _ = serve(tmp / "e-svc", stable_after=10)
    try:
        # Steady state first: the worker child goes on importing its analysers (numpy, scipy, highdicom) for a few seconds
        # after the service answers; those imports are its start, not its idle cost (session 22: a 5 s wait counted about
        # 0.5 CPU-s of them). Wait until 5 s pass with under 0.05 CPU-s used by the whole tree (at most 60 s).
        time.sleep(5)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            tree = [proc.pid, *descendants(proc.pid)]
            start = sum(cpu_seconds(p) for p in tree)
            time.sleep(5)
            if sum(cpu_seconds(p) for p in tree) - start < 0.05:
                break
        pids = [proc.pid, *descendants(proc.pid)]
        names = {p: "redis" if "redis" in cmdline(p) else ("listener" if "listener-child" in cmdline(p) else
                                                          ("worker" if "worker-child" in cmdline(p) else "serve"))
                 for p in pids}
        before = {p: cpu_seconds(p) for p in pids}
        time.sleep(IDLE_SECONDS)
        used = {p: cpu_seconds(p) - before[p] for p in pids}
    finally:
        stop(proc)
    total = sum(used.values())
    parts = ", ".join(f"{names[p]} {v:.2f}" for p, v in used.items())
    print(f"    {total:.2f} CPU-s over {IDLE_SECONDS:.0f} s = {total / IDLE_SECONDS:.2%} of a core {parts}", flush=True)
    row(f"(e) idle `serve` (+ its Redis, listener and worker processes), {IDLE_SECONDS:.0f} s",
        f"**{total / IDLE_SECONDS:.2%}** of a core ({total:.2f} CPU-s: {parts}; was ≈ 5–8 %)", "≤ 1 %")


TITLE = "# Load benchmark (`make bench`, bench/bench_load.py)"
LATEST_BEGIN, LATEST_END = "<!-- latest-run:begin -->", "<!-- latest-run:end -->"


def merged_results(previous: str, latest: str) -> str:
    """bench/results.md with `latest` (this run's table) between the latest-run markers, under the title; the sections
    written by hand below it (earlier sessions' measurements and their reading) are kept as they were."""
    block = f"{LATEST_BEGIN}\n## Latest `make bench` run\n\n{latest.rstrip()}\n{LATEST_END}"
    if LATEST_BEGIN in previous and LATEST_END in previous:
        i, j = previous.index(LATEST_BEGIN), previous.index(LATEST_END) + len(LATEST_END)
        return previous[:i] + block + previous[j:]
    rest = previous[len(TITLE):].lstrip("\n") if previous.startswith(TITLE) else previous.lstrip("\n")
    return f"{TITLE}\n\n{block}\n\n{rest}".rstrip("\n") + "\n"


def write_results(started: str, took: float) -> None:
    table = ["| benchmark | measured | target |", "|---|---|---|"]
    table += [f"| {a} | {b} | {c} |" for a, b, c in rows]
    text = (f"Run {started} UTC on this machine: {os.cpu_count()} cores, **shared with other jobs while it ran** "
            f"(figures vary by ±20 % from run to run), loopback network, DCMTK storescu as the modality. "
            f"pacs-triage as shipped (fsync, audit); storescp without fsync. Took {took / 60:.1f} min.\n\n"
            + "\n".join(table) + "\n")
    if os.environ.get("BENCH_NO_RESULTS"):  # a comparison run: print only, bench/results.md untouched
        print("(bench/results.md not written: BENCH_NO_RESULTS)")
    else:  # the latest run replaces the previous one; the sessions' sections below are kept
        RESULTS.write_text(merged_results(RESULTS.read_text() if RESULTS.exists() else "", text))
    print("\n" + "\n".join(table))


if __name__ == "__main__":
    started = time.strftime("%Y-%m-%d %H:%M", time.gmtime())
    t0 = time.monotonic()
    only = set(sys.argv[1:]) or {"a", "b", "c", "d", "e"}
    with tempfile.TemporaryDirectory(prefix="bench-load-", dir=os.environ.get("BENCH_TMP")) as d:
        tmp = Path(d)
        for key, fn in (("a", single), ("b", concurrent), ("e", idle), ("d", large), ("c", sustained)):
            if key in only:
                fn(tmp)
    write_results(started, time.monotonic() - t0)
