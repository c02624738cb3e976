"""NeuroX side of ``benchmarks/methods.py --compare speed`` (ranking methods on one matrix).

Times NeuroX's neuron-ranking methods on activation matrices that are already extracted
(the same ``.npy`` files our own code reads), so that only the ranking methods are compared
and NeuroX's extractor and hdf5 loader are left out. ``python -m benchmarks.methods`` runs
it alternately with our side; it imports nothing of this repository. Run it by hand with
the python of the NeuroX venv made by ``../shared/bench/setup_neurox.sh`` (NeuroX 1.0.9
from PyPI, torch CPU), NOT with the project's venv::

    NX="$HOME/.cache/neuro-bench/neurox-venv/bin/python"
    "$NX" benchmarks/neurox_methods_ref.py \\
        --train-acts /tmp/ewt_acts/dev_last_X.npy --train-labels /tmp/ewt_acts/dev_y.npy \\
        --test-acts /tmp/ewt_acts/test_last_X.npy --test-labels /tmp/ewt_acts/test_y.npy \\
        --threads 2 [--stages probe,probeless,iou] [--iou-tags N] [--seed 0] [--l1 0] [--l2 0]

Stages (``--stages``, comma list; timings are ``time.perf_counter`` wall seconds and
exclude loading the ``.npy`` files and importing NeuroX):

``probe``
    ``train_probe``: ``neurox.interpretation.linear_probe.train_logistic_regression_probe(
    X, y, lambda_l1, lambda_l2)`` with NeuroX's defaults (10 epochs, batch 32, Adam lr 1e-3,
    no shuffling); ``evaluate``: ``evaluate_probe(probe, X_test, y_test)["__OVERALL__"]``
    (``test_accuracy``); ``ordering``: ``get_neuron_ordering(probe, label2idx)``
    (search_stride 100).
``probeless``
    ``neurox.interpretation.probeless.get_neuron_ordering(X, y)`` (Antverg & Belinkov
    2022; in the 1.0.9 wheel).
``iou``
    The PyPI 1.0.9 wheel has no ``neurox.interpretation.iou_probe``. This script carries a
    RE-IMPLEMENTATION of NeuroX master's ``iou_probe.get_neuron_ordering(X, y, threshold)``
    algorithm (see ``iou_get_neuron_ordering_reimpl`` below), run on the pinned
    scikit-learn. NeuroX's function takes a binary ``y`` only (issue #33), so a multi-class
    user has to call it once per tag, one-vs-rest; that is what is timed. ``--iou-tags N``
    times only the first N tags (label-index order) and extrapolates the total linearly
    (``iou_all_tags_s_estimated``).

Labels (``.npy`` of strings or ints) are numbered in sorted order (``np.unique``) to build
NeuroX's ``label2idx`` / ``idx2label``, so no ``PYTHONHASHSEED`` is needed. Test labels
never seen in train get ``--unseen-label`` (default: the most frequent train label), as
NeuroX's ``create_tensors(task_specific_tag=...)`` does.

Output: progress lines on stderr; NeuroX's own prints and progress bars go to
``--neurox-log`` (default: discarded); the LAST stdout line is one JSON object with
``tool``, ``ok``, ``stages_s.{train_probe,evaluate,ordering,probeless,iou}``,
``test_accuracy``, ``peak_rss_mb``, ``n_train``, ``n_test``, ``n_neurons``, ``n_labels``,
``settings``, ``versions`` and per-method details. Exit status 1 on failure (the JSON then
has ``ok: false``, ``error`` and ``failed_stage``).
"""

import argparse
import contextlib
import json
import os
import resource
import sys
import time
import traceback
import warnings

STAGE_GROUPS = {
    "probe": ["train_probe", "evaluate", "ordering"],
    "probeless": ["probeless"],
    "iou": ["iou"],
}
IOU_THRESHOLD = 0.05  # NeuroX master's documented usage value for iou_probe's threshold
TOP_K = 20
VERSION_PACKAGES = {
    "neurox": "neurox",
    "torch": "torch",
    "numpy": "numpy",
    "sklearn": "scikit-learn",
    "scipy": "scipy",
}


def say(msg):
    print(f"[neurox_methods_ref] {msg}", file=sys.__stderr__, flush=True)


def peak_rss_mb():
    """Peak resident set size of this process so far (getrusage ru_maxrss), MiB."""
    r = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return (
        r / 2**20 if sys.platform == "darwin" else r / 1024.0
    )  # bytes on macOS, KiB on Linux


def stages_arg(spec):
    groups = [s.strip() for s in spec.split(",") if s.strip()]
    bad = [g for g in groups if g not in STAGE_GROUPS]
    if bad or not groups:
        raise argparse.ArgumentTypeError(
            f"--stages is a comma list of {', '.join(STAGE_GROUPS)}; got {spec!r}"
        )
    return [g for g in STAGE_GROUPS if g in groups]  # canonical order


def parse_args(argv=None):
    ap = argparse.ArgumentParser(
        description="Time NeuroX 1.0.9's linear probe, probeless ranking and (a re-implementation of "
        "master's) IoU probe on pre-extracted activation matrices (.npy); prints one JSON "
        "object as the last stdout line. Run with the NeuroX venv's python."
    )
    ap.add_argument(
        "--train-acts",
        required=True,
        help=".npy float matrix [n_train x n_neurons] (probe/ranking data)",
    )
    ap.add_argument(
        "--train-labels",
        required=True,
        help=".npy vector [n_train] of labels (strings or ints)",
    )
    ap.add_argument(
        "--test-acts",
        required=True,
        help=".npy float matrix [n_test x n_neurons] (probe evaluation)",
    )
    ap.add_argument(
        "--test-labels",
        required=True,
        help=".npy vector [n_test] of labels (strings or ints)",
    )
    ap.add_argument(
        "--stages",
        type=stages_arg,
        default=list(STAGE_GROUPS),
        help="comma list of probe, probeless, iou (default: all three)",
    )
    ap.add_argument(
        "--threads",
        type=int,
        default=0,
        help="torch intra-op threads (torch.set_num_threads) and OMP_NUM_THREADS "
        "(default: torch's default)",
    )
    ap.add_argument(
        "--seed",
        type=int,
        default=0,
        help="seed for torch and numpy before training the probe (default 0)",
    )
    ap.add_argument(
        "--l1", type=float, default=0.0, help="probe lambda_l1 (NeuroX default 0)"
    )
    ap.add_argument(
        "--l2", type=float, default=0.0, help="probe lambda_l2 (NeuroX default 0)"
    )
    ap.add_argument(
        "--iou-tags",
        type=int,
        default=0,
        help="time the IoU probe for only the first N tags (label-index order) and extrapolate "
        "the all-tags total (default 0 = all tags)",
    )
    ap.add_argument(
        "--iou-threshold",
        type=float,
        default=IOU_THRESHOLD,
        help=f"IoU probe threshold: |x| below it is zeroed (default {IOU_THRESHOLD})",
    )
    ap.add_argument(
        "--unseen-label",
        default=None,
        help="label given to test rows whose label never occurs in train (NeuroX's "
        "task_specific_tag; default: the most frequent train label)",
    )
    ap.add_argument(
        "--neurox-log",
        default=None,
        help="file for NeuroX's own prints and progress bars (default: discarded)",
    )
    a = ap.parse_args(argv)
    if a.iou_tags < 0:
        ap.error("--iou-tags must be >= 0")
    if a.threads < 0:
        ap.error("--threads must be >= 0")
    for p in (a.train_acts, a.train_labels, a.test_acts, a.test_labels):
        if not os.path.isfile(p):
            ap.error(f"no such file: {p}")
    return a


# ----------------------------------------------------------------------------- compatibility shims
def numpy_shims(np):
    """Restore numpy aliases NeuroX 1.0.9 uses (np.int etc.) if the numpy in use removed them
    (>= 1.24). With the pinned numpy 1.23.5 nothing is changed."""
    applied = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for name, typ in (
            ("int", int),
            ("float", float),
            ("bool", bool),
            ("object", object),
        ):
            try:
                getattr(np, name)
            except AttributeError:
                setattr(np, name, typ)
                applied.append(f"np.{name} = {typ.__name__}")
    return applied


def versions():
    import importlib.util
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": sys.version.split()[0]}
    for key, dist in VERSION_PACKAGES.items():
        try:
            out[key] = version(dist)
        except PackageNotFoundError:
            out[key] = None
    out["neurox_build"] = (
        "pypi-1.0.9"
        if importlib.util.find_spec("neurox.interpretation.gaussian_probe") is None
        else "post-1.0.9 source (has gaussian_probe)"
    )
    out["neurox_has_iou_probe"] = (
        importlib.util.find_spec("neurox.interpretation.iou_probe") is not None
    )
    return out


# ----------------------------------------------------------------------------- IoU probe (re-implementation)
def iou_get_neuron_ordering_reimpl(X_train, y_train, threshold):
    """RE-IMPLEMENTATION (not NeuroX code) of NeuroX master's
    ``neurox.interpretation.iou_probe.get_neuron_ordering(X_train, y_train, threshold)``,
    which the PyPI 1.0.9 wheel lacks. Same algorithm and the same computational shape:

    1. zero every entry with ``|x| < threshold`` IN PLACE on ``X_train`` (NeuroX mutates the
       caller's matrix; callers here pass a private copy);
    2. for each neuron i, one ``sklearn.metrics.average_precision_score(y_train, X_train[:, i])``
       call on the (strided) column, in a Python loop;
    3. rank neurons by descending score (``np.argsort(score)[::-1]``, ties in argsort order).

    ``y_train`` must be binary (0/1); NeuroX's function has no multi-class mode.
    Returns (ranking, scores).
    """
    import numpy as np
    from sklearn.metrics import average_precision_score

    X_train[np.abs(X_train) < threshold] = 0
    scores = np.array(
        [
            average_precision_score(y_train, X_train[:, i])
            for i in range(X_train.shape[1])
        ]
    )
    ranking = np.argsort(scores)[::-1]
    return ranking, scores


# ----------------------------------------------------------------------------- main
def run(a, log_fh, res):
    stages, rss_after, cur = (
        res["stages_s"],
        res["peak_rss_mb_after_stage"],
        res["_cur"],
    )

    def stage(name, fn, *args, **kw):
        cur["stage"] = name
        say(f"{name} ...")
        t = time.perf_counter()
        with contextlib.redirect_stdout(log_fh), contextlib.redirect_stderr(log_fh):
            out = fn(*args, **kw)
        stages[name] = time.perf_counter() - t
        rss_after[name] = peak_rss_mb()
        say(f"{name}: {stages[name]:.3f} s (peak RSS so far {rss_after[name]:.0f} MB)")
        return out

    # ---- import (untimed by stages_s; reported as import_s)
    cur["stage"] = "import"
    t = time.perf_counter()
    with contextlib.redirect_stdout(log_fh), contextlib.redirect_stderr(log_fh):
        import numpy as np

        shims = numpy_shims(np)  # before NeuroX is imported
        import sklearn.metrics  # noqa: F401 - imported here so the iou stage does not pay for it
        import torch
        from neurox.interpretation import linear_probe as lp
        from neurox.interpretation import probeless
    if a.threads:
        torch.set_num_threads(a.threads)
    res["import_s"] = time.perf_counter() - t
    res["numpy_shims"] = shims
    res["versions"] = versions()
    res["settings"]["torch_threads"] = torch.get_num_threads()

    # ---- load the .npy files (untimed by stages_s; reported as load_s)
    cur["stage"] = "load"
    say("loading .npy files ...")
    t = time.perf_counter()
    notes = res["input_notes"]

    def load_acts(path):
        X = np.load(path)
        if X.ndim != 2:
            raise ValueError(
                f"{path}: expected a 2-D activation matrix, got shape {X.shape}"
            )
        if (
            X.dtype != np.float32
        ):  # evaluate_probe requires float32; torch.from_numpy keeps the dtype
            notes.append(f"{os.path.basename(path)}: {X.dtype} converted to float32")
            X = X.astype(np.float32)
        return np.ascontiguousarray(X)

    def load_labels(path):
        y = np.load(path, allow_pickle=True)
        if y.ndim != 1:
            raise ValueError(
                f"{path}: expected a 1-D label vector, got shape {y.shape}"
            )
        return y

    X, y_raw = load_acts(a.train_acts), load_labels(a.train_labels)
    Xt, yt_raw = load_acts(a.test_acts), load_labels(a.test_labels)
    if len(X) != len(y_raw) or len(Xt) != len(yt_raw):
        raise ValueError(
            f"rows/labels mismatch: train {len(X)}/{len(y_raw)}, test {len(Xt)}/{len(yt_raw)}"
        )
    if X.shape[1] != Xt.shape[1]:
        raise ValueError(f"train has {X.shape[1]} neurons, test {Xt.shape[1]}")

    # labels -> NeuroX's mappings, in sorted order (NeuroX itself uses Python-set order)
    classes, y_idx, counts = np.unique(y_raw, return_inverse=True, return_counts=True)
    classes = classes.tolist()  # native str / int keys, like NeuroX's dicts
    label2idx = {c: i for i, c in enumerate(classes)}
    idx2label = {i: c for c, i in label2idx.items()}
    unseen = (
        a.unseen_label
        if a.unseen_label is not None
        else classes[int(np.argmax(counts))]
    )
    if unseen not in label2idx:
        # allow an int label given on the command line as a string
        try:
            unseen = type(classes[0])(unseen)
        except (TypeError, ValueError):
            pass
        if unseen not in label2idx:
            raise ValueError(
                f"--unseen-label {a.unseen_label!r} does not occur in the train labels"
            )
    yt_list = yt_raw.tolist()
    n_unseen = sum(1 for lab in yt_list if lab not in label2idx)
    y = y_idx.astype(
        np.int64
    )  # NeuroX's create_tensors gives int64 (np.int) class indices
    yt = np.array(
        [label2idx.get(lab, label2idx[unseen]) for lab in yt_list], dtype=np.int64
    )
    res["load_s"] = time.perf_counter() - t
    res["n_train"], res["n_test"] = int(X.shape[0]), int(Xt.shape[0])
    res["n_neurons"], res["n_labels"] = int(X.shape[1]), len(classes)
    res["labels"] = [str(c) for c in classes]
    res["unseen_label"], res["n_test_unseen_label"] = str(unseen), n_unseen
    say(
        f"train {X.shape}, test {Xt.shape}, {len(classes)} labels, {n_unseen} unseen test labels "
        f"({res['load_s']:.1f} s)"
    )

    # ---- linear probe
    if "probe" in a.stages:
        torch.manual_seed(a.seed)
        np.random.seed(a.seed)
        probe = stage(
            "train_probe",
            lp.train_logistic_regression_probe,
            X,
            y,
            lambda_l1=a.l1,
            lambda_l2=a.l2,
        )
        scores = stage("evaluate", lp.evaluate_probe, probe, Xt, yt)
        raw = float(scores["__OVERALL__"])
        res["test_accuracy_raw"] = raw
        # NeuroX 1.0.9's metrics.accuracy returns (preds == labels).mean(), a fraction
        res["test_accuracy"] = raw / 100.0 if raw > 1.0 else raw
        ordering, cutoffs = stage("ordering", lp.get_neuron_ordering, probe, label2idx)
        res["probe_ordering"] = {
            "len": len(ordering),
            "top20": [int(i) for i in ordering[:TOP_K]],
            "distinct_cutoffs": len(set(cutoffs)),
        }
        del probe

    # ---- probeless
    if "probeless" in a.stages:
        ranking = stage("probeless", probeless.get_neuron_ordering, X, y)
        res["probeless_ordering"] = {
            "len": len(ranking),
            "top20": [int(i) for i in ranking[:TOP_K]],
        }

    # ---- IoU probe (re-implementation of master's algorithm), one tag at a time, one-vs-rest
    if "iou" in a.stages:
        n_meas = len(classes) if a.iou_tags == 0 else min(a.iou_tags, len(classes))
        iou = {
            "algorithm": "re-implementation of NeuroX master iou_probe.get_neuron_ordering "
            "(threshold, per-neuron sklearn average_precision_score, argsort desc)",
            "threshold": a.iou_threshold,
            "n_tags_total": len(classes),
            "n_tags_measured": n_meas,
            "per_tag_s": {},
            "top20_per_tag": {},
            "best_ap_per_tag": {},
        }
        res["iou"] = iou

        def iou_all():
            # One private copy, because NeuroX's function thresholds its input in place. A user
            # passing one matrix for every tag gets the same result (thresholding is idempotent).
            t0 = time.perf_counter()
            Xw = X.copy()
            iou["input_copy_s"] = time.perf_counter() - t0
            for idx in range(n_meas):
                tag = idx2label[idx]
                y_bin = (y == idx).astype(np.int64)
                t1 = time.perf_counter()
                ranking, ap = iou_get_neuron_ordering_reimpl(Xw, y_bin, a.iou_threshold)
                dt = time.perf_counter() - t1
                iou["per_tag_s"][str(tag)] = dt
                iou["top20_per_tag"][str(tag)] = [int(i) for i in ranking[:TOP_K]]
                iou["best_ap_per_tag"][str(tag)] = float(ap[ranking[0]])
                say(f"  iou tag {idx + 1}/{n_meas} {tag}: {dt:.2f} s")
            del Xw

        stage("iou", iou_all)
        per_tag = list(iou["per_tag_s"].values())
        iou["measured_tags_s"] = sum(per_tag)
        iou["mean_per_tag_s"] = sum(per_tag) / len(per_tag)
        iou["measured_s"] = stages["iou"]  # copy + measured tags, wall
        res["iou_all_tags_s_estimated"] = (
            iou["input_copy_s"] + iou["mean_per_tag_s"] * len(classes)
            if n_meas < len(classes)
            else stages["iou"]
        )
        res["iou_all_tags_s_is_extrapolated"] = n_meas < len(classes)
    cur["stage"] = None


def main(argv=None):
    a = parse_args(argv)
    if a.threads:
        os.environ["OMP_NUM_THREADS"] = str(
            a.threads
        )  # before numpy/torch are imported
    res = {
        "tool": "neurox",
        "ok": False,
        "stages_s": {},
        "test_accuracy": None,
        "peak_rss_mb": None,
        "n_train": None,
        "n_test": None,
        "n_neurons": None,
        "n_labels": None,
        "peak_rss_mb_after_stage": {},
        "input_notes": [],
        "settings": {
            "stages": a.stages,
            "lambda_l1": a.l1,
            "lambda_l2": a.l2,
            "probe_epochs": 10,
            "probe_batch_size": 32,
            "probe_learning_rate": 0.001,
            "ordering_search_stride": 100,
            "iou_threshold": a.iou_threshold,
            "iou_tags": a.iou_tags or "all",
            "seed": a.seed,
            "threads_arg": a.threads or None,
            "torch_threads": None,
            "device": "cpu",
            "label_order": "sorted (np.unique)",
        },
        "inputs": {
            "train_acts": a.train_acts,
            "train_labels": a.train_labels,
            "test_acts": a.test_acts,
            "test_labels": a.test_labels,
        },
        "_cur": {"stage": None},
    }
    rc = 0
    with open(a.neurox_log or os.devnull, "w", encoding="utf-8") as log_fh:
        try:
            run(a, log_fh, res)
            res["ok"] = True
        except Exception as e:  # noqa: BLE001 - every failure is reported as JSON
            rc = 1
            res["error"] = f"{type(e).__name__}: {e}"
            res["failed_stage"] = res["_cur"]["stage"]
            if isinstance(e, ImportError):
                res["hint"] = (
                    "run this script with the python of the venv made by ../shared/bench/setup_neurox.sh"
                )
            say(f"FAILED in stage {res['failed_stage']}")
            traceback.print_exc(file=sys.__stderr__)
    res.pop("_cur", None)
    res["peak_rss_mb"] = peak_rss_mb()
    res["timed_total_s"] = sum(res["stages_s"].values())
    if a.neurox_log:
        res["neurox_log"] = a.neurox_log
    sys.__stdout__.write(json.dumps(res) + "\n")
    sys.__stdout__.flush()
    return rc


if __name__ == "__main__":
    sys.exit(main())
