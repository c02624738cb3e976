"""NeuroX's side of ``benchmarks/neurox_interop.py``: NeuroX 1.0.9's own extractor and loader.

Run by the python of NeuroX's venv (``../shared/bench/setup_neurox.sh``); imports nothing
of this repository. ``argv[1]`` is a JSON spec::

    {"log": path, "extract": {"model", "corpus", "hdf5", "json", "aggregation"} or null,
     "load": [[activation_file, npz_out], ...]}

``extract``: ``transformers_extractor.extract_representations`` writes the corpus's
activations as HDF5 and as JSON; ``load``: ``loader.load_activations`` reads each file and
its per-sentence arrays are saved to an ``.npz`` (``s0``, ``s1``, … and ``n_layers``).
NeuroX's prints go to the log. The last stdout line is a JSON object of versions.
"""

import contextlib
import json
import sys
from importlib.metadata import version

import numpy as np


def main(argv):
    spec = json.loads(argv[1])
    with open(spec["log"], "a") as log, contextlib.redirect_stdout(log), contextlib.redirect_stderr(log):
        from neurox.data import loader

        e = spec.get("extract")
        if e:
            from neurox.data.extraction import transformers_extractor as te

            for out, kind in ((e["hdf5"], "hdf5"), (e["json"], "json")):
                te.extract_representations(e["model"], e["corpus"], out, device="cpu",
                                           aggregation=e["aggregation"], output_type=kind,
                                           decompose_layers=False)
        for src, dst in spec["load"]:
            acts, n_layers = loader.load_activations(src)
            np.savez(dst, n_layers=n_layers, **{f"s{i}": a for i, a in enumerate(acts)})
    print(json.dumps({k: version(k) for k in ("neurox", "numpy", "torch", "transformers", "h5py")}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
