"""NeuroX's side of the end-to-end benchmark: its standard workflow, start to finish.

Start here: ``../shared/bench/neurox_ref.py`` runs NeuroX 1.0.9's extract (train and
test) → load → probe → evaluate → ordering; this script runs exactly that (it imports
the harness unchanged) and then does what a NeuroX user does next: retrain a probe on the
top, bottom and random neurons of the ordering at each fraction and evaluate it
(``ablation.filter_activations_keep_neurons`` + ``train_logistic_regression_probe`` +
``evaluate_probe``). With the defaults (fractions 0.10 and 0.20, 2 random draws) that is 8
retrained probes, the work of ``benchmarks/e2e.py``'s NeuroX-equivalent analysis.
``python -m benchmarks.e2e`` runs it alternately with our side; it imports nothing of this
repository.

Run it with the NeuroX venv's python (``../shared/bench/setup_neurox.sh``)::

    NX="$HOME/.cache/neuro-bench/neurox-venv/bin/python"
    $NX benchmarks/neurox_e2e_ref.py --train …/en_ewt-ud-dev.conllu --test …/en_ewt-ud-test.conllu \\
        --model "$MODEL" --aggregation last --threads 2 --seed 0

Every option of ``neurox_ref.py`` is accepted, plus ``--fractions`` and ``--n-random``.
The last stdout line is one JSON object: ``neurox_ref.py``'s fields, with the stage
``retrain`` added to ``stages_s`` and ``retrained`` (one entry per probe: selection,
fraction, k, test accuracy).
"""

from __future__ import annotations

import math
import os
import sys
import time
from pathlib import Path

HARNESS = Path(__file__).resolve().parents[2] / "shared" / "bench"


def _split_argv(argv: list[str]) -> tuple[list[str], list[float], int]:
    """Our own options out of ``argv``; the rest goes to neurox_ref.py unchanged."""
    rest, fractions, n_random = [], [0.10, 0.20], 2
    it = iter(argv)
    for arg in it:
        if arg == "--fractions":
            fractions = [float(f) for f in next(it).split(",")]
        elif arg == "--n-random":
            n_random = int(next(it))
        else:
            rest.append(arg)
    return rest, fractions, n_random


def main() -> int:
    argv, fractions, n_random = _split_argv(sys.argv[1:])
    seed = int(argv[argv.index("--seed") + 1]) if "--seed" in argv else 0
    if os.environ.get("PYTHONHASHSEED") is None:
        # As neurox_ref.py does: NeuroX numbers labels in set order, which follows the hash seed.
        os.environ["PYTHONHASHSEED"] = str(seed)
        os.execv(sys.executable, [sys.executable, *sys.argv])
    sys.path.insert(0, str(HARNESS))
    import neurox.interpretation.linear_probe as lp
    import neurox_ref as ref  # the shared harness, unchanged
    import numpy as np
    from neurox.interpretation import ablation

    seen: dict = {}
    train, evaluate, ordering = lp.train_logistic_regression_probe, lp.evaluate_probe, lp.get_neuron_ordering

    def keep_first(name, fn, *keys):
        def wrapper(*args, **kwargs):
            out = fn(*args, **kwargs)
            if name not in seen:
                seen[name] = (*args[:len(keys)], out)
            return out
        return wrapper

    # Capture the harness's matrices and ordering (its first calls); NeuroX itself is unchanged.
    lp.train_logistic_regression_probe = keep_first("train", train, "X", "y")
    lp.evaluate_probe = keep_first("evaluate", evaluate, "probe", "X", "y")
    lp.get_neuron_ordering = keep_first("ordering", ordering)

    run = ref.run

    def run_then_retrain(a, workdir, log_fh, res):
        run(a, workdir, log_fh, res)
        X, y, _ = seen["train"]
        _, X_test, y_test, _ = seen["evaluate"]
        order, _ = seen["ordering"][-1]
        n = X.shape[1]
        rng = np.random.default_rng(seed)
        retrained = []
        start = time.perf_counter()
        import contextlib

        for fraction in fractions:
            k = math.ceil(fraction * n)
            chosen = [("top", list(order[:k])), ("bottom", list(order[-k:]))]
            chosen += [("random", sorted(rng.choice(n, size=k, replace=False).tolist())) for _ in range(n_random)]
            for selection, neurons in chosen:
                with contextlib.redirect_stdout(log_fh), contextlib.redirect_stderr(log_fh):
                    X_k = ablation.filter_activations_keep_neurons(X, neurons)
                    p = train(X_k, y, lambda_l1=a.l1, lambda_l2=a.l2)
                    acc = evaluate(p, ablation.filter_activations_keep_neurons(X_test, neurons), y_test)
                retrained.append({"selection": selection, "fraction": fraction, "k": k,
                                  "accuracy": float(acc["__OVERALL__"])})
        res["stages_s"]["retrain"] = time.perf_counter() - start
        res["peak_rss_mb_after_stage"]["retrain"] = ref.peak_rss_mb()
        res["retrained"] = retrained
        ref.say(f"retrain: {len(retrained)} probes in {res['stages_s']['retrain']:.2f} s")

    ref.run = run_then_retrain
    ref.STAGES = [*ref.STAGES, "retrain"]
    return ref.main(argv)


if __name__ == "__main__":
    sys.exit(main())
