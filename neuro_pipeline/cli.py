"""The ``neuro-pipeline`` command.

``neuro-pipeline run``      materialize what is stale or missing through Dagster and print a summary
``neuro-pipeline retrain-demo`` fine-tune the latest registry version into the next one
``neuro-pipeline export-neurox`` / ``import-neurox``  NeuroX activation files (HDF5, JSON)
``neuro-pipeline ui``       start the Dagster UI (and daemon) on 127.0.0.1
``neuro-pipeline worker``   a Celery worker for ``execution.executor: celery``
``neuro-pipeline summary``  print what the last run stored
``neuro-pipeline validate`` check a pipeline.yaml without running anything

The library never imports dagster: this command drives Dagster through its own CLI in a
subprocess (``python -m assets.run`` / ``dg dev``) with a project-local instance.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

from tqdm import tqdm

from neuro_pipeline.config import ConfigError, PipelineConfig, load_config

PROJECT_ROOT = Path(__file__).resolve().parents[1]
CONFIG_ENV = "NEURO_PIPELINE_CONFIG"
_EVENT = re.compile(r" - (?:STEP_\w+|ASSET_CHECK_EVALUATION|RUN_\w+) - (.*)$")
_SHOWN = ("STEP_SUCCESS", "STEP_FAILURE", "ASSET_CHECK_EVALUATION", "RUN_SUCCESS",
          "RUN_FAILURE", "Error", "error:")
_PROGRESS = re.compile(r"progress ([\w .-]+): (\d+)/(\d+) (\w+)")


def _home(args: argparse.Namespace, cfg: PipelineConfig | None = None) -> Path:
    """A project-local DAGSTER_HOME holding a copy of the instance's dagster.yaml: the one
    ``execution.instance`` names, or the repo's."""
    home = Path(args.home).resolve() / "dagster_home"
    home.mkdir(parents=True, exist_ok=True)
    src = cfg.path(cfg.execution.instance) if cfg is not None and cfg.execution.instance else None
    src = src or PROJECT_ROOT / "dagster.yaml"
    if src.is_file():
        shutil.copyfile(src, home / "dagster.yaml")
    return home


def _env(args: argparse.Namespace, cfg: PipelineConfig) -> dict[str, str]:
    env = dict(os.environ)
    env["DAGSTER_HOME"] = str(_home(args, cfg))
    env[CONFIG_ENV] = str(Path(args.config).resolve()) if args.config else ""
    env.setdefault("HF_HUB_OFFLINE", "1")
    env.setdefault("TRANSFORMERS_OFFLINE", "1")
    env.setdefault("TOKENIZERS_PARALLELISM", "false")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(PROJECT_ROOT), env.get("PYTHONPATH")]))
    return env


def _load(args: argparse.Namespace, *, deep: bool = True) -> PipelineConfig:
    try:
        return load_config(args.config, deep=deep)
    except ConfigError as exc:
        sys.exit(f"neuro-pipeline: {exc}")


class Stopper:
    """Ctrl-C (SIGINT) and SIGTERM while ``python -m assets.run`` runs: the first asks it to
    cancel the run (SIGUSR1: marked canceled, slots freed, finished stages kept), a second
    kills its process group at once (the next run then finds the run dead and recovers it).

    The child runs in a process group of its own, so that a Ctrl-C at the terminal reaches it
    once, through here; it dies with this process (see ``assets.run``), as it would with the
    group."""

    def __init__(self, proc: subprocess.Popen):
        self.proc = proc
        self.signal: int | None = None
        self.killed = False
        self._previous = {s: signal.signal(s, self._handle) for s in (signal.SIGINT, signal.SIGTERM)}

    def _handle(self, signum, frame) -> None:
        name = signal.Signals(signum).name
        if self.signal is None:
            self.signal = signum
            print(f"\nneuro-pipeline: {name}: stopping the run; the stages it finished are kept "
                  "(Ctrl-C again stops it at once)", file=sys.stderr, flush=True)
            try:
                os.kill(self.proc.pid, signal.SIGUSR1)
            except ProcessLookupError:
                pass
        elif not self.killed:
            self.killed = True
            print(f"neuro-pipeline: {name} again: killing the run now; the next `neuro-pipeline run` recovers it",
                  file=sys.stderr, flush=True)
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass

    def restore(self) -> None:
        for s, handler in self._previous.items():
            signal.signal(s, handler)

    @property
    def exit_code(self) -> int | None:
        """128 + the signal (130 for SIGINT, 143 for SIGTERM), as a shell reports it."""
        return None if self.signal is None else 128 + self.signal


def _dagster_job(cmd: list[str], env: dict[str, str], log_file) -> tuple[int, Stopper]:
    """Run a Dagster command in its own process group, keep its whole log, and show its events
    and progress bars; a :class:`Stopper` turns Ctrl-C and SIGTERM into a clean cancel. The
    exit status, and the stopper (which signal came, if any)."""
    proc = subprocess.Popen(cmd, env={**env, "NEURO_PIPELINE_PARENT": str(os.getpid())}, cwd=os.getcwd(),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1, process_group=0)
    stopper = Stopper(proc)
    assert proc.stdout is not None
    bar = ProgressBar(sys.stdout)
    for line in proc.stdout:
        log_file.write(line)
        match = _PROGRESS.search(line)
        if stopper.signal is not None and not line.startswith("neuro-pipeline:"):
            continue  # stopping: the interrupted step's failure is the stop itself (the log keeps it)
        if match:
            bar.update(match.group(1), int(match.group(2)), int(match.group(3)), match.group(4))
        elif any(tag in line for tag in _SHOWN):
            bar.close()
            print("  " + _short(line), flush=True)
        elif line.startswith("neuro-pipeline:"):
            bar.close()
            print("  " + line.split(":", 1)[1].strip(), flush=True)
        elif "waiting since" in line:  # a step waiting for the store's lock (neuro_pipeline.store.engine)
            bar.close()
            print("  " + line.strip()[-300:], flush=True)
    bar.close()
    rc = proc.wait()
    stopper.restore()
    return rc, stopper


_BAR_FORMAT = "  {desc:<11} [{bar}] {percentage:5.1f}% {n}/{total} {unit}  {elapsed}<{remaining}"
_BAR_WIDTH = 100  # the whole line's; narrower on a narrower terminal


class ProgressBar:
    """One progress bar per long step, fed by the ``progress <what>: <done>/<total> <unit>``
    lines the Dagster steps log. On a terminal it is a tqdm bar redrawn in place; otherwise
    (CI logs, tests) the same text is printed as a plain line about every quarter, so that a
    captured log stays short and free of carriage returns. The bar fills what the line's
    other fields leave of the terminal's width (at most 100 columns)."""

    def __init__(self, out=None):
        self.out = out if out is not None else sys.stdout
        self.tty = hasattr(self.out, "isatty") and self.out.isatty()
        self.active: str | None = None
        self.bar: tqdm | None = None
        self.start = 0.0
        self.next_quarter = 0.0

    def update(self, what: str, done: int, total: int, unit: str) -> None:
        if what != self.active:
            self.close()
            self.active, self.start, self.next_quarter = what, time.perf_counter(), 0.0
            if self.tty:
                # The size as shutil gives it (80x24 where the terminal reports 0x0, as a fresh pty
                # does; tqdm would then draw nothing).
                size = shutil.get_terminal_size()
                self.bar = tqdm(total=total, desc=what, unit=unit, file=self.out, bar_format=_BAR_FORMAT,
                                ncols=min(size.columns, _BAR_WIDTH), nrows=size.lines, mininterval=0.2)
        if self.bar is not None:
            self.bar.total = total
            self.bar.update(done - self.bar.n)
        else:
            share = done / total if total else 1.0
            if share >= self.next_quarter:
                print(tqdm.format_meter(done, total, time.perf_counter() - self.start, ncols=_BAR_WIDTH,
                                        prefix=what, unit=unit, bar_format=_BAR_FORMAT, ascii=".#"),
                      file=self.out, flush=True)
                self.next_quarter = share + 0.25
        if done >= total:
            self.close()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
        self.bar = None
        self.active = None


def _short(line: str) -> str:
    """The event message of a dagster log line (``... - STEP_SUCCESS - Finished ...``)."""
    match = _EVENT.search(line)
    return match.group(1) if match else line.strip()[-160:]


#: An exception line, possibly after a step's name (``[token_activations.extract_shard[...]]: ...``,
#: how dagster-celery reports a step whose worker was lost).
_EXCEPTION = re.compile(r"^\s*(?:\[.*\]:\s*)?([A-Za-z_][\w.]*(?:Error|Exception|Failure)): (.+)$", re.MULTILINE)


def root_cause(log_text: str) -> str | None:
    """The last exception raised by our code (not dagster's wrappers) in a dagster log."""
    found = [(name, msg) for name, msg in _EXCEPTION.findall(log_text)
             if not name.startswith(("dagster.", "Dagster"))]
    if not found:
        return None
    name, msg = found[-1]
    return f"{name.rsplit('.', 1)[-1]}: {msg.strip()}"


def cmd_run(args: argparse.Namespace) -> int:
    # The Dagster process checks everything (ranking methods included) and reports a bad
    # setting as the run's cause; here only what the paths need, without importing torch.
    cfg = _load(args, deep=False)
    env = _env(args, cfg)
    logs = Path(args.home).resolve() / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    log_path = logs / f"run-{time.strftime('%Y%m%d-%H%M%S')}.log"
    print(f"neuro-pipeline: analysis '{cfg.name}' ({cfg.source})")
    print(f"  model  {cfg.model_dir}")
    print(f"  store  {cfg.store_path}")
    print(f"  Dagster instance {env['DAGSTER_HOME']}; full log {log_path}")
    start = time.perf_counter()
    cmd = [sys.executable, "-m", "assets.run", *(["--all"] if args.all else []),
           *[a for v in args.version for a in ("--version", v)]]
    print("- observe the inputs, then materialize " + ("everything" if args.all else "what is stale or missing"),
          flush=True)
    with open(log_path, "w", encoding="utf-8") as log_file:
        rc, stopper = _dagster_job(cmd, env, log_file)
        if stopper.signal is not None:
            how = "killed" if stopper.killed else "canceled"
            print(f"neuro-pipeline: the run was {how} ({signal.Signals(stopper.signal).name}). The stages it "
                  f"finished are kept in {cfg.store_path}; `neuro-pipeline run` resumes. Full log: {log_path}",
                  file=sys.stderr, flush=True)
            return stopper.exit_code
        if rc != 0:
            log_file.flush()
            text = log_path.read_text(encoding="utf-8")
            print("\n".join(text.splitlines()[-40:]), file=sys.stderr)
            cause = root_cause(text)
            print(f"\nneuro-pipeline: the run failed (exit {rc})" + (f": {cause}" if cause else "")
                  + f"\nThe previous results in {cfg.store_path} are unchanged. Full log: {log_path}",
                  file=sys.stderr)
            return rc
    print(f"done in {time.perf_counter() - start:.0f} s\n")
    if cfg.registry_dir is not None:
        print_versions(cfg)
    else:
        print_summary(cfg)
    port = args.port
    print(f"\nOpen the Dagster UI (lineage, checks, metadata): neuro-pipeline ui"
          f"{' --config ' + args.config if args.config else ''}  → http://127.0.0.1:{port}")
    return 0


def print_summary(cfg: PipelineConfig) -> None:
    from neuro_pipeline.stages.report import latest_summary

    s = latest_summary(cfg)
    rep = s["report"]
    metrics = s["metrics"]
    full = next((m["accuracy"] for m in metrics if m["selection"] == "all"), None)
    base = next((m["accuracy"] for m in metrics if m["selection"] == "majority_baseline"), None)
    print(f"Analysis '{cfg.name}', task {rep['task']}, model version {rep['model_version'][:12]}")
    print(f"  full-probe accuracy {full:.4f}   (majority-class baseline {base:.4f})")
    print("  retrained probe accuracy with selected neurons (random draws are shared by all methods):")
    print("    {:<14} {:>8} {:>8} {:>8} {:>8}".format("method", "neurons", "top", "random", "bottom"))
    fractions = sorted({m["fraction"] for m in metrics if m["selection"] in ("top", "random", "bottom")})
    for method in dict.fromkeys(m["method"] for m in metrics):
        for f in fractions:
            row = {m["selection"]: m["accuracy"] for m in metrics if m["fraction"] == f and m["method"] == method}
            print("    {:<14} {:>7g}% {:>8.4f} {:>8.4f} {:>8.4f}".format(
                method, 100 * f, row.get("top", float("nan")), row.get("random", float("nan")),
                row.get("bottom", float("nan"))))
    print(f"  top neurons per class by {s['top_per_class_method']} (layer:unit, layer 0 = embeddings):")
    for label, neurons in s["top_per_class"].items():
        print(f"    {label:<8} {', '.join(neurons)}")
    print(f"  report  {rep['html_path']}")
    print(f"          {rep['markdown_path']}")
    print(f"  DuckDB  {s['store']}")


def print_versions(cfg: PipelineConfig) -> None:
    from neuro_pipeline.stages.drift import versions_summary

    rows = versions_summary(cfg)
    if not rows:
        print(f"No model version analysed yet in {cfg.store_path}.")
        return
    k = rows[0]["k"]
    print(f"Model versions of analysis '{cfg.name}' (drift against the previous version, Jaccard of the top {k}):")
    print("  {:<10} {:<13} {:>9} {:>11} {:>9} {:>7}  {}".format(
        "version", "content hash", "accuracy", "selectivity", "Δ acc", "alerts", "Jaccard per method"))
    for r in rows:
        def pct(x, sign=False):
            return "–" if x is None else (f"{100 * x:+.1f}" if sign else f"{100 * x:.1f}%")
        jac = ", ".join(f"{m} {v:.2f}" for m, v in r["jaccard"].items()) or (
            "first version" if r["previous_label"] is None else "–")
        print("  {:<10} {:<13} {:>9} {:>11} {:>9} {:>7}  {}".format(
            r["label"][:10], r["model_version"][:12], pct(r["accuracy"]), pct(r["selectivity"]),
            pct(r["accuracy_delta"], sign=True), "–" if r["n_alerts"] is None else r["n_alerts"], jac))
    last = rows[-1]
    if last["html_path"]:
        print(f"  latest report {last['html_path']}")


def cmd_retrain_demo(args: argparse.Namespace) -> int:
    from neuro_pipeline.retrain import DEMO_STEPS, retrain_demo

    cfg = _load(args)
    registry = Path(args.registry).resolve() if args.registry else cfg.registry_dir
    if registry is None:
        sys.exit("neuro-pipeline: give --registry DIR, or set monitoring.registry in the config.")
    registry.mkdir(parents=True, exist_ok=True)
    steps = args.steps or DEMO_STEPS
    print(f"neuro-pipeline: fine-tuning the latest version in {registry} for {steps} steps "
          "(a UPOS tagger on the demo corpus; the encoder becomes the next version)", flush=True)
    bar = ProgressBar(sys.stdout)
    summary = retrain_demo(registry, steps=steps, seed=args.seed,
                           progress=lambda done, total: bar.update("fine-tuning", done, total, "steps"))
    bar.close()
    print(f"wrote {summary.out_dir} in {summary.seconds:.0f} s (loss {summary.loss_start:.3f} → "
          f"{summary.loss_end:.3f}); a running `neuro-pipeline ui` analyses it on its own, "
          "or run `neuro-pipeline run` now.")
    return 0


def cmd_export_neurox(args: argparse.Namespace) -> int:
    from neuro_pipeline.interop import corpus_sentences, from_store
    from neuro_pipeline.stages.common import current_activation_set
    from neuro_pipeline.store import Store, StoreError

    cfg = _load(args)
    if args.version:
        cfg = cfg.for_model_version(args.version)
    store = Store(cfg.store_path)
    try:
        aset = current_activation_set(cfg, store)
        sentences = corpus_sentences(store, cfg.name, splits=args.split or None)
        path = from_store(store, aset.activation_set, sentences, args.out)
    except (StoreError, ValueError) as exc:
        sys.exit(f"neuro-pipeline: {exc}")
    print(f"wrote {len(sentences)} sentences ({aset.n_layers} layers × {aset.hidden_size}) of model version "
          f"{aset.model_version[:12]} to {path} (NeuroX {path.suffix[1:]} format)")
    return 0


def cmd_import_neurox(args: argparse.Namespace) -> int:
    from neuro_pipeline.interop import read_neurox_corpus, to_store
    from neuro_pipeline.store import Store

    cfg = _load(args)
    store = Store(cfg.store_path)
    sentences = read_neurox_corpus(args.sentences) if args.sentences else None
    try:
        result = to_store(store, args.file, aggregation=args.aggregation, sentences=sentences)
    except ValueError as exc:
        sys.exit(f"neuro-pipeline: {exc}")
    aset = result.activation_set
    print(f"imported {args.file} into {cfg.store_path}: activation set {aset.activation_set} "
          f"(model version {aset.model_version}), {result.n_written} sentences written, "
          f"{result.n_duplicates} duplicates, {result.n_already_stored} already stored, "
          f"{len(result.rejected)} rejected")
    return 0


def cmd_summary(args: argparse.Namespace) -> int:
    cfg = _load(args)
    try:
        if cfg.registry_dir is not None:
            print_versions(cfg)
        print_summary(cfg)
    except ValueError as exc:
        sys.exit(f"neuro-pipeline: {exc}")
    return 0


def cmd_validate(args: argparse.Namespace) -> int:
    cfg = _load(args)
    print(json.dumps({"name": cfg.name, "source": cfg.source, "model": str(cfg.model_dir),
                      "store": str(cfg.store_path), "corpus": cfg.corpus.format, "task": cfg.task}, indent=2))
    return 0


def cmd_ui(args: argparse.Namespace) -> int:
    cfg = _load(args)
    env = _env(args, cfg)
    # `dg dev` (dagster-dg-cli) is the current way to start the UI and daemon; `dagster dev` warns that
    # it is superseded. Given a workspace file, `dg dev` runs the same services from it directly.
    cmd = [sys.executable, "-m", "dagster_dg_cli.cli", "dev", "-w", str(PROJECT_ROOT / "workspace.yaml"),
           "-h", "127.0.0.1", "-p", str(args.port)]
    if importlib.util.find_spec("dagster_dg_cli") is None:
        sys.exit("neuro-pipeline: the UI needs dagster-dg-cli (a dependency of neuro-pipeline); run scripts/setup.sh "
                 "or pip install 'dagster-dg-cli==1.13.27'.")
    busy = port_in_use("127.0.0.1", args.port)
    if busy is not None:
        # The webserver would log "address already in use" and the daemon would run on as if all
        # were well, while the page at that address is another server's.
        sys.exit(f"neuro-pipeline: cannot start the Dagster UI: port {args.port} on 127.0.0.1 is already in use"
                 f"{busy}. Stop that server or choose another port with --port.")
    print(f"Dagster UI for analysis '{cfg.name}' on http://127.0.0.1:{args.port} (Ctrl-C stops it)")
    # dg dev copies SIGINT's disposition onto SIGTERM; reset both so Ctrl-C and kill work.
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    os.chdir(os.getcwd())
    os.execvpe(cmd[0], cmd, env)
    return 0  # pragma: no cover


def port_in_use(host: str, port: int) -> str | None:
    """None when ``host:port`` can be listened on; otherwise what holds it (" by pid N: command",
    where /proc tells, else "")."""
    import errno
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        # As a server binds: a port whose last connections are closing (TIME_WAIT) is free.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            if exc.errno != errno.EADDRINUSE:
                raise
        else:
            return None
    holder = _listener(port)
    return f" by pid {holder[0]}: {holder[1]}" if holder else ""


def _listener(port: int) -> tuple[int, str] | None:
    """The process listening on TCP ``port`` (Linux /proc; None where it cannot be told, e.g.
    another user's process)."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if len(fields) > 9 and fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) == port:
                inodes.add(f"socket:[{fields[9]}]")
    for fd_dir in Path("/proc").glob("[0-9]*/fd"):
        try:
            for fd in fd_dir.iterdir():
                if os.readlink(fd) in inodes:
                    pid = int(fd_dir.parent.name)
                    cmdline = (fd_dir.parent / "cmdline").read_bytes().replace(b"\0", b" ").decode().strip()
                    return pid, cmdline[:200]
        except OSError:
            continue
    return None


def cmd_worker(args: argparse.Namespace) -> int:
    """A Celery worker for ``execution.executor: celery``: it takes the analysis's steps from
    the broker of ``execution`` and runs each with the run's Dagster instance."""
    cfg = _load(args, deep=False)
    if cfg.execution.executor != "celery":
        print(f"neuro-pipeline: {cfg.source} sets execution.executor: {cfg.execution.executor}; workers serve "
              "execution.executor: celery", file=sys.stderr)
        return 2
    env = _env(args, cfg)
    name = args.name or f"neuro-{os.getpid()}"
    cmd = [sys.executable, "-m", "celery", "-A", "assets.celery_worker", "worker", "-Q", "dagster",
           "--prefetch-multiplier=1", "--concurrency", str(args.concurrency), "-n", f"{name}@%h",
           "--loglevel", args.loglevel, "--without-gossip", "--without-mingle"]
    print(f"neuro-pipeline: worker {name} ({args.concurrency} process(es)) for analysis '{cfg.name}', broker "
          f"{cfg.execution.broker}", flush=True)
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    os.execvpe(cmd[0], cmd, env)
    return 0  # pragma: no cover


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="neuro-pipeline", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for name, func, help_ in (("run", cmd_run, "materialize the analysis through Dagster"),
                              ("ui", cmd_ui, "start the Dagster UI and daemon on 127.0.0.1"),
                              ("summary", cmd_summary, "print the last stored results"),
                              ("validate", cmd_validate, "check a pipeline.yaml")):
        p = sub.add_parser(name, help=help_)
        p.add_argument("-c", "--config", default=os.environ.get(CONFIG_ENV) or None,
                       help="pipeline.yaml (default: the embedded default analysis)")
        p.add_argument("--home", default=".neuro", help="folder for the Dagster instance and logs (default .neuro)")
        p.add_argument("--port", type=int, default=3000, help="port of the Dagster UI (default 3000)")
        p.set_defaults(func=func)
        if name == "run":
            p.add_argument("--all", action="store_true",
                           help="materialize every asset, not only what is stale or missing")
            p.add_argument("--version", action="append", default=[],
                           help="with monitoring.registry: analyse only this model version (repeatable)")
    p = sub.add_parser("worker", help="a Celery worker for execution.executor: celery")
    p.add_argument("-c", "--config", default=os.environ.get(CONFIG_ENV) or None,
                   help="pipeline.yaml (the same file as the runs')")
    p.add_argument("--home", default=".neuro", help="folder for the Dagster instance and logs (default .neuro)")
    p.add_argument("--name", help="the worker's name (default neuro-<pid>)")
    p.add_argument("--concurrency", type=int, default=1, help="steps at once in this worker (default 1)")
    p.add_argument("--loglevel", default="INFO", help="Celery's log level (default INFO)")
    p.set_defaults(func=cmd_worker)
    p = sub.add_parser("retrain-demo", help="fine-tune the latest registry version briefly into the next one")
    p.add_argument("-c", "--config", default=os.environ.get(CONFIG_ENV) or None,
                   help="pipeline.yaml whose monitoring.registry receives the version")
    p.add_argument("--registry", help="the registry folder (default: monitoring.registry of the config)")
    p.add_argument("--steps", type=int, default=0, help="training steps (default: the demo's 200, 1-2 minutes)")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=cmd_retrain_demo)
    config_help = "pipeline.yaml (default: the embedded default analysis)"
    p = sub.add_parser("export-neurox", help="write the analysis's activations as a NeuroX HDF5 or JSON file")
    p.add_argument("-c", "--config", default=os.environ.get(CONFIG_ENV) or None, help=config_help)
    p.add_argument("--out", required=True, help="the file to write: *.hdf5 or *.json")
    p.add_argument("--split", action="append", default=[], help="only these splits (repeatable; default all)")
    p.add_argument("--version", help="with monitoring.registry: the model version to export")
    p.set_defaults(func=cmd_export_neurox)
    p = sub.add_parser("import-neurox", help="store a NeuroX activation file (HDF5 or JSON) as an activation set")
    p.add_argument("file", help="the NeuroX file")
    p.add_argument("-c", "--config", default=os.environ.get(CONFIG_ENV) or None, help=config_help)
    p.add_argument("--aggregation", default="last", help="how NeuroX combined subwords (its default: last)")
    p.add_argument("--sentences", help="the extractor's input file (one sentence per line), to key rows by "
                                       "the real words instead of NeuroX's stored subword strings")
    p.set_defaults(func=cmd_import_neurox)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
