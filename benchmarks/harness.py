"""The shared parts of every benchmark: arguments, the NeuroX side, A/B rounds, JSON output.

Start here when writing or reading a benchmark. Each entry point in ``benchmarks/`` answers
one question (see ``benchmarks/README.md``) and uses this module for the rest:

* :func:`parser` / :func:`parse`: the options every benchmark takes (``--rounds``/``--reps``,
  ``--out``, ``--quick``, ``--ewt-dir``, ``--model``, ``--threads``, ``--neurox-python``)
  and ``--quick``'s small settings for a smoke run;
* :func:`neurox_python`, :func:`neurox_side`: NeuroX 1.0.9 in its own venv
  (``../shared/bench/setup_neurox.sh``), run as a subprocess on the same inputs; when the
  venv is missing, a clear message and ``None``, and the benchmark runs our side only;
* :func:`alternate` (subprocesses) and :func:`alternate_calls` (functions of this process):
  the sides run A B A B … in one sitting, and :class:`ABResult` gives medians, min–max
  and ratios against the reference side of the same sitting;
* :func:`run_measured`: one subprocess with its wall time, peak RSS (``wait4``), CPU
  time and the CPU other processes used meanwhile (a disturbed run shows);
* :func:`report`: one uniform JSON object (machine, date, git commit, command line,
  settings, every round's raw numbers, medians, ratios and the quality of what was timed),
  written to ``--out`` and printed as the last stdout line; :func:`table` prints tables.

A side run by :func:`alternate` prints one JSON object as its last stdout line (as
``../shared/bench/neurox_ref.py`` does); its numeric fields, nested keys joined with dots,
are collected per round. Our sides are the benchmark's own module run with ``--side``, so
the same command also works under ``../shared/bench/ab.py``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import os
import platform
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
#: The team's NeuroX harness: setup_neurox.sh, neurox_ref.py, ab.py (read-only).
SHARED_BENCH = SHARED / "bench"
NEUROX_REF = SHARED_BENCH / "neurox_ref.py"
DEFAULT_EWT = SHARED / "data" / "ud-en-ewt"
#: Where setup_neurox.sh puts NeuroX's venv (``$NEURO_BENCH_VENV`` moves it, as there).
NEUROX_PYTHON = Path(os.environ.get("NEURO_BENCH_VENV", Path.home() / ".cache" / "neuro-bench" / "neurox-venv")) \
    / "bin" / "python"
BENCHMARKS = Path(__file__).resolve().parent


class BenchError(RuntimeError):
    """A side failed; the message carries the end of its stderr."""


def say(message: str) -> None:
    """A progress line on stderr (stdout is for tables and the final JSON)."""
    print(f"[bench] {message}", file=sys.stderr, flush=True)


# ----------------------------------------------------------------------------- arguments
def parser(doc: str | None, *, rounds: int = 3, neurox: bool = False, threads: int | None = 2,
           ewt: bool = True, model: bool = True) -> argparse.ArgumentParser:
    """An ArgumentParser with the options every benchmark shares; the module docstring's
    first paragraph is the description and the rest the epilog."""
    head, _, rest = (doc or "").strip().partition("\n\n")
    ap = argparse.ArgumentParser(description=head, epilog=rest or None,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", "--reps", dest="rounds", type=int, default=rounds,
                    help=f"timed rounds; each runs every side once, alternately (default {rounds})")
    ap.add_argument("--out", type=Path, default=None, help="also write the JSON result to this file")
    ap.add_argument("--quick", action="store_true",
                    help="a smoke run: one round on the smallest inputs (options given explicitly still win)")
    if ewt:
        ap.add_argument("--ewt-dir", type=Path, default=DEFAULT_EWT,
                        help="UD English EWT (en_ewt-ud-{dev,test}.conllu); default ../shared/data/ud-en-ewt")
    if model:
        ap.add_argument("--model", default="embedded",
                        help="a local Hugging Face model folder (default: the embedded all-MiniLM-L6-v2)")
    if threads is not None:
        ap.add_argument("--threads", type=int, default=threads,
                        help=f"torch intra-op threads, the same on every side (default {threads})")
    if neurox:
        ap.add_argument("--neurox-python", type=Path, default=NEUROX_PYTHON,
                        help="python of NeuroX's venv (default ~/.cache/neuro-bench/neurox-venv/bin/python)")
        ap.add_argument("--no-neurox", action="store_true", help="run our side only")
    # Internal: run one side and print its JSON (what alternate() starts in a fresh process).
    ap.add_argument("--side", default=None, help=argparse.SUPPRESS)
    return ap


def parse(ap: argparse.ArgumentParser, argv: Sequence[str] | None = None,
          quick: dict[str, Any] | None = None) -> argparse.Namespace:
    """Parse ``argv``; with ``--quick``, every option in ``quick`` that was left at its
    default takes the quick value (``rounds`` is 1 unless ``quick`` says otherwise)."""
    args = ap.parse_args(argv)
    if args.quick:
        for key, value in {"rounds": 1, **(quick or {})}.items():
            if getattr(args, key) == ap.get_default(key):
                setattr(args, key, value)
    if args.rounds < 1:
        ap.error("--rounds must be at least 1")
    return args


def model_dir(args: argparse.Namespace) -> Path:
    """The model folder ``--model`` names (``embedded``: the embedded MiniLM)."""
    if args.model in (None, "embedded"):
        from neuro_pipeline.config import embedded_model_dir

        return embedded_model_dir()
    return Path(args.model).resolve()


def ewt_file(args: argparse.Namespace, split: str) -> Path:
    """``en_ewt-ud-<split>.conllu`` under ``--ewt-dir``; exits with a message when missing."""
    path = Path(args.ewt_dir).resolve() / f"en_ewt-ud-{split}.conllu"
    if not path.is_file():
        raise SystemExit(f"{path}: not found (--ewt-dir names the folder of UD English EWT)")
    return path


def csv(text: str, kind: Callable[[str], Any] = str) -> list:
    """A comma-separated option as a list."""
    return [kind(item.strip()) for item in str(text).split(",") if item.strip()]


# ----------------------------------------------------------------------------- inputs
def conllu_blocks(path: Path) -> list[str]:
    """The sentence blocks of a CoNLL-U file (separated by blank lines), comments kept."""
    return [b for b in Path(path).read_text(encoding="utf-8").split("\n\n") if b.strip()]


def first_sentences(src: Path, n: int | None, dst: Path) -> Path:
    """A file of the first ``n`` sentences of ``src`` (all when ``n`` is 0 or None): what
    ``neurox_ref.py --max-sentences n`` reads of it."""
    blocks = conllu_blocks(src)
    dst.parent.mkdir(parents=True, exist_ok=True)
    dst.write_text("\n\n".join(blocks[:n] if n else blocks) + "\n\n", encoding="utf-8")
    return dst


def write_conllu(path: Path, sentences: Iterable[tuple[Sequence[str], Sequence[str]]]) -> int:
    """Sentences as (words, UPOS labels) to a minimal CoNLL-U file; returns the word count."""
    blocks, n_words = [], 0
    for words, labels in sentences:
        n_words += len(words)
        blocks.append("\n".join(f"{i}\t{w}\t_\t{t}\t_\t_\t_\t_\t_\t_"
                                for i, (w, t) in enumerate(zip(words, labels), start=1)))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n\n".join(blocks) + "\n\n", encoding="utf-8")
    return n_words


def repeated_corpus(path: Path, source: Path, repeats: float) -> tuple[int, int]:
    """``source`` repeated ``repeats`` times (a fraction takes that share of its sentences);
    every repeat r > 0 starts each sentence with the word ``§r``, so that no sentence
    repeats (sentences are content-addressed and would be extracted once). Returns
    (sentences, words)."""
    from neuro_pipeline.corpus import read_conllu

    base = read_conllu(source)
    n_total = round(len(base) * repeats)

    def sentences():
        for i in range(n_total):
            r, s = divmod(i, len(base))
            yield ([f"§{r}"] if r else []) + list(base[s].tokens), (["SYM"] if r else []) + list(base[s].labels)

    return n_total, write_conllu(path, sentences())


def repeated_corpus_analysis(args, work: Path, repeats: float, name: str, extra_yaml: str = "",
                              extraction: str = "parquet") -> tuple[Path, int, int]:
    """A folder ``x<repeats>`` under ``work`` holding EWT dev repeated ``repeats`` times
    (:func:`repeated_corpus`) and ``p.yaml``, an analysis of it (no test split; the store,
    reports and Parquet files in the folder) with the model and threads of ``args`` and
    ``extra_yaml`` appended. Returns (folder, sentences, words)."""
    folder = work / f"x{repeats:g}"
    folder.mkdir(parents=True, exist_ok=True)
    n_sentences, n_words = repeated_corpus(folder / "corpus.conllu", ewt_file(args, "dev"), repeats)
    model = "" if args.model == "embedded" else f"path: {model_dir(args)}, "
    (folder / "p.yaml").write_text(
        f"name: {name}\nstore: s.duckdb\nreports: r\nmodel: {{{model}batch_size: 64, threads: {args.threads}}}\n"
        f"extraction: {{storage: {extraction}}}\n"
        "corpus: {format: conllu, train: corpus.conllu, test_fraction: 0.0}\n" + extra_yaml, encoding="utf-8")
    return folder, n_sentences, n_words


# ----------------------------------------------------------------------------- one measured subprocess
@dataclass
class Run:
    """One subprocess: wall seconds, peak RSS of its largest process (MiB), CPU seconds,
    the cores other processes kept busy meanwhile, and its last stdout line's JSON."""

    side: str
    round: int
    returncode: int
    wall_s: float
    peak_rss_mb: float
    cpu_s: float
    other_busy_cores: float | None
    result: dict | None
    stdout: str = field(repr=False, default="")
    stderr: str = field(repr=False, default="")

    def numbers(self) -> dict[str, float]:
        """wall_s, peak_rss_mb, cpu_s, other_busy_cores and the JSON's numeric fields
        (nested keys joined with dots; the process's own figures win a name clash)."""
        own = {"wall_s": self.wall_s, "peak_rss_mb": self.peak_rss_mb, "cpu_s": self.cpu_s}
        if self.other_busy_cores is not None:
            own["other_busy_cores"] = self.other_busy_cores
        inner = flatten(self.result or {})
        # The side's own peak_rss_mb (its getrusage) is kept under json.*; ours is wait4's.
        return {**{(f"json.{k}" if k in own else k): v for k, v in inner.items()}, **own}


def _busy_jiffies() -> int | None:
    try:
        with open("/proc/stat", encoding="ascii") as fh:
            v = [int(x) for x in fh.readline().split()[1:]]
        return sum(v) - v[3] - (v[4] if len(v) > 4 else 0)  # all but idle and iowait
    except (OSError, ValueError, IndexError):
        return None


# Runs each measured command through a small launcher process. Linux counts the memory of
# the process a child was forked from in the child's peak RSS (the old address space's high
# water mark is kept at exec), so a command forked straight from a benchmark holding a
# large matrix would report at least that much. The launcher is a fresh, small interpreter:
# its own child starts from about 10 MB (the floor of every figure), and it reports that
# child's wall time and rusage (peak RSS, CPU) in a file.
_LAUNCHER = r"""
import os, sys, time
report, cgroup, argv = sys.argv[1], sys.argv[2], sys.argv[3:]
if cgroup:
    with open(os.path.join(cgroup, "cgroup.procs"), "w") as fh:
        fh.write(str(os.getpid()))
start = time.perf_counter()
pid = os.fork()
if pid == 0:
    try:
        os.execvp(argv[0], argv)
    finally:
        os._exit(127)
_, status, ru = os.wait4(pid, 0)
wall = time.perf_counter() - start
with open(report, "w") as fh:
    fh.write("%r %d %r %r" % (wall, ru.ru_maxrss, ru.ru_utime, ru.ru_stime))
code = os.waitstatus_to_exitcode(status)
sys.exit(128 - code if code < 0 else code)
"""


def run_measured(command: Sequence[str], *, side: str = "run", round: int = 0, env: dict | None = None,
                 cwd: Path | None = None, cgroup: Path | None = None, timeout: float | None = None) -> Run:
    """Run ``command`` and measure it from outside: wall time, peak RSS (the largest of the
    process and the children it waited for, ``wait4``), CPU time, and the cores other
    processes kept busy meanwhile. ``cgroup``: a cgroup-v1 folder the process joins before
    it starts (the launcher joins it first; see :func:`memory_cgroup`). ``timeout``: kill
    its process group after so many seconds (the returncode is then negative)."""
    import signal

    hz = os.sysconf("SC_CLK_TCK")
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err, \
            tempfile.NamedTemporaryFile("r", suffix=".rusage") as figures:
        busy0, start = _busy_jiffies(), time.perf_counter()
        proc = subprocess.Popen([sys.executable, "-I", "-S", "-c", _LAUNCHER, figures.name, str(cgroup or ""),
                                 *map(str, command)],
                                stdout=out, stderr=err, env=env, cwd=cwd or ROOT, start_new_session=True)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        except BaseException:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            raise
        outside = time.perf_counter() - start
        busy1 = _busy_jiffies()
        text = Path(figures.name).read_text().split()
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read().decode("utf-8", "replace"), err.read().decode("utf-8", "replace")
    if len(text) == 4:
        wall, maxrss_kb, cpu = float(text[0]), int(text[1]), float(text[2]) + float(text[3])
    else:  # killed before the launcher could report
        wall, maxrss_kb, cpu = outside, 0, 0.0
    other = max(0.0, (busy1 - busy0) / hz - cpu) / outside if busy0 is not None and busy1 is not None else None
    return Run(side, round, proc.returncode, wall, maxrss_kb / 1024, cpu, other, last_json(stdout), stdout, stderr)


def last_json(text: str) -> dict | None:
    """The JSON object on the last non-empty line of ``text``, if it is one."""
    for line in reversed(text.splitlines()):
        if line.strip():
            try:
                value = json.loads(line)
            except ValueError:
                return None
            return value if isinstance(value, dict) else None
    return None


def flatten(d: dict, prefix: str = "") -> dict[str, float]:
    """Numeric fields of a nested dict, keys joined with dots (booleans and lists left out)."""
    out: dict[str, float] = {}
    for key, value in d.items():
        if isinstance(value, dict):
            out.update(flatten(value, f"{prefix}{key}."))
        elif isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
            out[f"{prefix}{key}"] = float(value)
    return out


def memory_cgroup(limit_mb: int) -> Path:
    """A cgroup-v1 memory cgroup with this limit (root only); remove it with ``rmdir``."""
    cgroup = Path("/sys/fs/cgroup/memory") / f"neuro-bench-{os.getpid()}-{time.monotonic_ns()}"
    cgroup.mkdir()
    (cgroup / "memory.limit_in_bytes").write_text(str(limit_mb * 2**20))
    swap = cgroup / "memory.memsw.limit_in_bytes"
    if swap.exists():
        try:
            swap.write_text(str(limit_mb * 2**20))
        except OSError:
            pass
    return cgroup


def cgroup_figures(cgroup: Path) -> dict[str, int]:
    """The cgroup's peak usage (MiB) and how often it hit its limit."""
    return {"cgroup_max_usage_mb": round(int((cgroup / "memory.max_usage_in_bytes").read_text()) / 2**20),
            "cgroup_failcnt": int((cgroup / "memory.failcnt").read_text())}


# ----------------------------------------------------------------------------- the NeuroX side
def neurox_python(args: argparse.Namespace, *,
                  instead: str = "running OUR SIDE ONLY, so no ratio against NeuroX is printed") -> Path | None:
    """NeuroX's python when the venv is there (and not ``--no-neurox``); otherwise says
    clearly what happens ``instead`` (by default: only our side runs), and returns None."""
    if getattr(args, "no_neurox", False):
        say(f"--no-neurox: {instead}")
        return None
    python = Path(getattr(args, "neurox_python", NEUROX_PYTHON))
    if python.is_file() and os.access(python, os.X_OK):
        return python
    say(f"NeuroX venv NOT FOUND ({python} is missing): {instead}. Create the venv with "
        f"{SHARED_BENCH / 'setup_neurox.sh'} (about a minute) or give --neurox-python.")
    return None


def neurox_env() -> dict[str, str]:
    """The environment NeuroX runs in: offline, and no PYTHONPATH (so it cannot import
    neuro_pipeline or this repo's packages by accident)."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    env.pop("PYTHONPATH", None)
    return env


@dataclass
class Side:
    """One side of an A/B: a command run in a fresh process each round. ``before`` and
    ``after`` run untimed around each run (e.g. deleting a store); ``cgroup`` makes the
    memory cgroup the run joins (removed after it)."""

    name: str
    command: list[str]
    env: dict[str, str] | None = None
    cwd: Path | None = None
    cgroup: Callable[[], Path | None] | None = None
    before: Callable[[], None] | None = None
    after: Callable[[], None] | None = None


def neurox_side(python: Path, script: Path, *script_args: Any, name: str = "neurox") -> Side:
    """NeuroX's side: ``script`` (``neurox_ref.py`` or one of our ``*_ref.py`` files, which
    import nothing of this repo) run by NeuroX's python."""
    return Side(name, [str(python), str(script), *map(str, script_args)], env=neurox_env())


def ours_side(module: str, *module_args: Any, name: str = "ours", side: str = "ours") -> Side:
    """Our side: ``python -m benchmarks.<module> --side <side> ...`` in this venv."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    return Side(name, [sys.executable, "-m", f"benchmarks.{module}", "--side", side, *map(str, module_args)],
                env=env, cwd=ROOT)


# ----------------------------------------------------------------------------- A/B rounds
@dataclass
class ABResult:
    """Every round's numbers per side, and medians and ratios against ``reference``.

    ``speedup=True``: ratios are reference / side (above 1: the side is faster than the
    reference, as "NeuroX / ours"); ``False``: side / reference (above 1: the side takes
    longer, as "ours / bare pass")."""

    reference: str | None
    rounds: dict[str, list[dict[str, float]]]
    order: list[str]
    speedup: bool = True

    @property
    def sides(self) -> list[str]:
        return list(self.rounds)

    def values(self, side: str, key: str) -> list[float]:
        return [r[key] for r in self.rounds[side] if key in r]

    def median(self, side: str, key: str) -> float | None:
        values = self.values(side, key)
        return statistics.median(values) if values else None

    def spread(self, side: str, key: str) -> dict[str, float] | None:
        values = self.values(side, key)
        if not values:
            return None
        return {"median": statistics.median(values), "min": min(values), "max": max(values), "n": len(values)}

    def ratio(self, side: str, key: str) -> float | None:
        """reference / side (``speedup``) or side / reference, of the medians."""
        if self.reference is None or side == self.reference:
            return None
        ref, mine = self.median(self.reference, key), self.median(side, key)
        if ref is None or mine is None:
            return None
        num, den = (ref, mine) if self.speedup else (mine, ref)
        return num / den if den else None

    def ratio_label(self, side: str) -> str:
        return f"{self.reference}/{side}" if self.speedup else f"{side}/{self.reference}"

    def to_json(self) -> dict:
        keys = {side: sorted(set().union(*self.rounds[side])) if self.rounds[side] else [] for side in self.sides}
        out = {"reference": self.reference, "order": self.order,
               "ratio_is": "reference / side" if self.speedup else "side / reference",
               "rounds": self.rounds,
               "medians": {side: {k: self.spread(side, k) for k in keys[side]} for side in self.sides}}
        if self.reference is not None:
            common = set(keys[self.reference])
            out["ratios"] = {side: {k: self.ratio(side, k) for k in sorted(common & set(keys[side]))}
                             for side in self.sides if side != self.reference}
        return out


def alternate(sides: Sequence[Side], rounds: int, *, warmup: int = 0, reference: str | None = None,
              speedup: bool = True, timeout: float | None = None,
              require_json: bool = True) -> tuple[ABResult, dict[str, list[Run]]]:
    """Run the sides in the order A B … A B … (``warmup`` untimed rounds first), each run a
    fresh process measured from outside; a failed run (an exit status other than 0, no
    JSON last line unless ``require_json`` is False, or ``"ok": false``) stops everything
    (:class:`BenchError`)."""
    runs: dict[str, list[Run]] = {s.name: [] for s in sides}
    order = []
    for rnd in range(-warmup, rounds):
        for side in sides:
            label = f"{'warm-up' if rnd < 0 else f'round {rnd + 1}/{rounds}'} {side.name}"
            if side.before is not None:
                side.before()
            cgroup = side.cgroup() if side.cgroup else None
            say(f"{label} ...")
            try:
                run = run_measured(side.command, side=side.name, round=rnd, env=side.env, cwd=side.cwd,
                                   cgroup=cgroup, timeout=timeout)
                if cgroup is not None:
                    run.result = {**(run.result or {}), **cgroup_figures(cgroup)}
            finally:
                if cgroup is not None:
                    cgroup.rmdir()
                if side.after is not None:
                    side.after()
            busy = f", other processes {run.other_busy_cores:.2f} cores" if run.other_busy_cores is not None else ""
            say(f"{label}: {run.wall_s:.2f} s, peak RSS {run.peak_rss_mb:.0f} MB, CPU {run.cpu_s:.1f} s{busy}")
            if run.returncode != 0 or (require_json and run.result is None) or (run.result or {}).get("ok") is False:
                raise BenchError(f"{side.name} failed (exit {run.returncode}): {shlex.join(side.command)}\n"
                                 f"--- end of its stderr ---\n{run.stderr[-4000:]}\n"
                                 f"--- end of its stdout ---\n{run.stdout[-1500:]}")
            if rnd >= 0:
                runs[side.name].append(run)
                order.append(side.name)
    result = ABResult(reference, {name: [r.numbers() for r in rs] for name, rs in runs.items()}, order, speedup)
    return result, runs


def alternate_calls(calls: dict[str, Callable[[int], dict[str, float]]], rounds: int, *,
                    reference: str | None = None, speedup: bool = False, warmup: int = 0) -> ABResult:
    """The same in this process: each call gets the round number and returns its numbers
    (it times what it means to time; ``call_s`` is the wall time around it)."""
    out: dict[str, list[dict[str, float]]] = {name: [] for name in calls}
    order = []
    for rnd in range(-warmup, rounds):
        for name, call in calls.items():
            start = time.perf_counter()
            numbers = dict(call(rnd))
            numbers.setdefault("call_s", time.perf_counter() - start)
            if rnd >= 0:
                out[name].append(numbers)
                order.append(name)
    return ABResult(reference, out, order, speedup)


# ----------------------------------------------------------------------------- output
def machine() -> dict[str, Any]:
    """What the numbers were measured on."""
    info: dict[str, Any] = {"hostname": platform.node(), "platform": platform.platform(),
                            "python": platform.python_version(), "cpus": os.cpu_count()}
    if hasattr(os, "sched_getaffinity"):
        info["cpus_usable"] = len(os.sched_getaffinity(0))
    try:
        cpuinfo = Path("/proc/cpuinfo").read_text(encoding="ascii", errors="replace")
        model = next((line.split(":", 1)[1].strip() for line in cpuinfo.splitlines()
                      if line.startswith("model name")), None)
        flags = set(next((line.split(":", 1)[1].split() for line in cpuinfo.splitlines()
                          if line.startswith("flags")), []))
        info["cpu_model"] = model
        info["cpu_flags"] = sorted(flags & {"avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile"})
    except OSError:
        pass
    try:
        meminfo = Path("/proc/meminfo").read_text(encoding="ascii").split()
        info["memory_mb"] = round(int(meminfo[meminfo.index("MemTotal:") + 1]) / 1024)
    except (OSError, ValueError):
        pass
    info["load_average"] = [round(x, 2) for x in os.getloadavg()] if hasattr(os, "getloadavg") else None
    return info


def git_state() -> dict[str, Any]:
    """The commit of this checkout and whether files differ from it (read-only git calls)."""
    def git(*cmd: str) -> str | None:
        try:
            proc = subprocess.run(["git", *cmd], cwd=ROOT, capture_output=True, text=True, timeout=30, check=False)
        except (OSError, subprocess.TimeoutExpired):
            return None
        return proc.stdout.strip() if proc.returncode == 0 else None

    status = git("status", "--porcelain", "--untracked-files=no")
    return {"commit": git("rev-parse", "HEAD"), "dirty": None if status is None else bool(status)}


def command_line(module: str) -> str:
    """How this run was started, as a command to paste."""
    return shlex.join([os.path.relpath(sys.executable, ROOT) if sys.executable.startswith(str(ROOT))
                       else sys.executable, "-m", f"benchmarks.{module}", *sys.argv[1:]])


def _jsonable(value: Any) -> Any:
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if hasattr(value, "item") and callable(value.item):  # numpy scalars
        return value.item()
    raise TypeError(f"not JSON serialisable: {type(value)}")


def report(args: argparse.Namespace, module: str, question: str, *, ab: ABResult | None = None,
           quality: dict | None = None, results: Any = None, notes: Sequence[str] = ()) -> dict:
    """The uniform JSON result: printed as the last stdout line and written to ``--out``."""
    out = {
        "benchmark": module, "question": question,
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "machine": machine(), "git": git_state(), "command": command_line(module),
        "settings": {k: v for k, v in vars(args).items() if k != "side"},
        "quick": bool(getattr(args, "quick", False)),
        "notes": list(notes),
    }
    if ab is not None:
        out["ab"] = ab.to_json()
    if quality is not None:
        out["quality"] = quality
    if results is not None:
        out["results"] = results
    text = json.dumps(out, default=_jsonable)
    if getattr(args, "out", None):
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(out, default=_jsonable, indent=1) + "\n", encoding="utf-8")
        say(f"wrote {args.out}")
    print(text, flush=True)
    return out


def side_result(result: dict) -> None:
    """What a ``--side`` process prints: one JSON object, the last stdout line."""
    print(json.dumps(result, default=_jsonable), flush=True)


def fmt(x: Any, digits: int | None = None) -> str:
    """A number for a table: 3 significant-ish digits, '-' for missing."""
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "-"
    if isinstance(x, bool) or not isinstance(x, (int, float)):
        return str(x)
    if digits is not None:
        return f"{x:.{digits}f}"
    if isinstance(x, int) or (abs(x) >= 1000 and float(x).is_integer()):
        return f"{int(x):,}"
    if abs(x) >= 100:
        return f"{x:,.0f}"
    if abs(x) >= 1:
        return f"{x:.2f}"
    return f"{x:.3g}"


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]], *, title: str | None = None,
          file=None) -> str:
    """An aligned plain-text table (the first column left-aligned, the others right-aligned)
    printed to stdout (or ``file``)."""
    cells = [[fmt(c) for c in row] for row in rows]
    numeric = [i > 0 for i in range(len(headers))]
    widths = [max([len(h)] + [len(r[i]) for r in cells]) for i, h in enumerate(headers)]

    def line(values):
        return "  ".join(v.rjust(w) if num else v.ljust(w) for v, w, num in zip(values, widths, numeric)).rstrip()

    text = "\n".join(([title] if title else []) + [line(headers), line(["-" * w for w in widths])]
                     + [line(r) for r in cells])
    print(text + "\n", file=file or sys.stdout, flush=True)
    return text


def ab_table(ab: ABResult, rows: Sequence[tuple], *, title: str | None = None) -> str:
    """One row per (label, key) or (label, key, False): each side's median [min–max] and,
    unless the row says False (a quality figure, not a cost), its ratio to the reference."""
    headers = ["", *[f"{s} median [min–max]" for s in ab.sides]]
    others = [s for s in ab.sides if s != ab.reference] if ab.reference else []
    headers += [ab.ratio_label(s) for s in others]
    body = []
    for label, key, *with_ratio in rows:
        cells: list[Any] = [label]
        for side in ab.sides:
            sp = ab.spread(side, key)
            cells.append("-" if sp is None else (fmt(sp["median"]) if sp["n"] == 1 else
                                                 f"{fmt(sp['median'])} [{fmt(sp['min'])}–{fmt(sp['max'])}]"))
        for side in others:
            r = ab.ratio(side, key) if (with_ratio or [True])[0] else None
            cells.append("-" if r is None else f"{r:.2f}×")
        body.append(cells)
    return table(headers, body, title=title)


def quality_table(quality: dict, *, title: str = "Quality of what was timed") -> str:
    """The scalar entries of a nested dict, one row each (nested keys joined with dots)."""
    def items(d, prefix=""):
        for key, value in d.items():
            if isinstance(value, dict):
                yield from items(value, f"{prefix}{key}.")
            elif not isinstance(value, (list, tuple)):
                yield f"{prefix}{key}", value
    return table(["", "value"], list(items(quality)), title=title)


def workdir(prefix: str, keep: Path | None = None) -> tuple[Path, Callable[[], None]]:
    """A scratch folder (``keep``: that folder, emptied and left in place) and its cleanup."""
    if keep is not None:
        shutil.rmtree(keep, ignore_errors=True)
        keep.mkdir(parents=True)
        return keep, lambda: None
    path = Path(tempfile.mkdtemp(prefix=f"neuro-bench-{prefix}-"))
    return path, lambda: shutil.rmtree(path, ignore_errors=True)


def median(values: Iterable[float]) -> float | None:
    values = list(values)
    return statistics.median(values) if values else None
