"""Stage summaries turned into Dagster metadata (numbers as numeric metadata so the UI plots them)."""

import dagster as dg

from neuro_pipeline.report import markdown_table, report_markdown


def per_task(summaries: list, metadata) -> dict:
    """Metadata of a per-task stage: the first task's in full; with concept tasks, each
    further task's numbers prefixed by ``<task>/`` (text entries are left out)."""
    md = dict(metadata(summaries[0]))
    if len(summaries) > 1:
        md["tasks"] = ", ".join(s.task for s in summaries)
        for s in summaries[1:]:
            for key, value in metadata(s).items():
                if isinstance(value, (int, float)) and not isinstance(value, bool):
                    md[f"{s.task}/{key}"] = value
                elif isinstance(value, dg.MetadataValue) and key in ("report_html",):
                    md[f"{s.task}/{key}"] = value
    return md


def _md_table(header: list[str], rows: list[list[object]]) -> dg.MetadataValue:
    return dg.MetadataValue.md(markdown_table(header, rows))


def corpus_metadata(s, cfg) -> dict:
    splits = sorted(s.n_tokens)
    return {
        "dagster/row_count": sum(s.n_tokens.values()),
        "n_sentences": sum(s.n_sentences.values()),
        "n_labels": s.n_labels,
        "n_sentence_pairs": s.n_pairs,
        "corpus_version": s.version,
        "task": cfg.task,
        "sources": dg.MetadataValue.json(s.sources),
        "splits": _md_table(["split", "sentences", "words"], [[k, s.n_sentences[k], s.n_tokens[k]] for k in splits]),
        "label_distribution": _md_table(["label", *splits], [[r["label"], *[r.get(k, 0) for k in splits]]
                                                             for r in s.label_counts]),
    }


def activation_metadata(s) -> dict:
    return {
        "dagster/row_count": s.n_rows,
        "model_version": s.model_version[:12],
        "activation_set": s.activation_set,
        "model_dir": dg.MetadataValue.path(s.model_dir),
        "n_layers": s.n_layers,
        "hidden_size": s.hidden_size,
        "n_neurons": s.n_layers * s.hidden_size,
        "n_sentences": s.n_sentences,
        "n_extracted": s.n_extracted,
        "n_reused": s.n_reused,
        "n_windowed_sentences": s.n_windowed,
        "n_rejected_sentences": s.n_rejected,
        "n_words_without_subwords": s.n_words_without_subwords,
        "extraction_seconds": s.seconds,
        "model_load_seconds": s.load_seconds,
        "import_seconds": s.import_seconds,
        "write_wait_seconds": s.write_wait_seconds,
        "words_per_second": s.words_per_second if s.words_per_second is not None else 0.0,
        **({"model_label": s.model_label} if s.model_label else {}),
        **({"n_shards": s.n_shards} if s.n_shards > 1 else {}),
    }


def ranking_metadata(s) -> dict:
    md = {
        "method": s.method,
        "name": s.name,
        "task": s.task,
        "params_hash": s.params_hash,
        "n_train_words": s.n_train,
        "n_neurons": s.n_neurons,
        "n_ranked": s.n_ranked,
        "fit_seconds": s.seconds,
        "fitted": dg.MetadataValue.json({k: v for k, v in s.fitted.items() if not isinstance(v, (list, dict))}),
        "top_neurons": _md_table(["rank", "neuron", "score", "top words"],
                                 [[i + 1, t["neuron"], f"{t['score']:.4g}", ", ".join(s.top_words.get(t["neuron"], []))]
                                  for i, t in enumerate(s.top_neurons)]),
        "top_neurons_per_class": _md_table(["label", "top neurons (layer:unit)"],
                                           [[k, ", ".join(v)] for k, v in s.top_per_class.items()]),
    }
    return md


def agreement_metadata(s) -> dict:
    md: dict = {"methods": ", ".join(s.methods), "neuron_vote_top10": ", ".join(s.vote_top)}
    ns = s.ns
    pairs: dict = {}
    for r in s.pairs:
        pairs.setdefault((r["method_a"], r["method_b"]), {})[r["n"]] = r["jaccard"]
    md["pairwise_jaccard"] = _md_table(["method a", "method b", *[f"n={n}" for n in ns]],
                                       [[a, b, *[f"{v.get(n, float('nan')):.2f}" for n in ns]]
                                        for (a, b), v in pairs.items()])
    votes: dict = {}
    for r in s.votes:
        votes.setdefault(r["method"], {})[r["n"]] = r["vote_jaccard"]
    md["jaccard_with_vote_of_others"] = _md_table(["method", *[f"n={n}" for n in ns]],
                                                  [[m, *[f"{v.get(n, float('nan')):.2f}" for n in ns]]
                                                   for m, v in votes.items()])
    for m, v in votes.items():
        if 100 in v:
            md[f"vote_jaccard_{m}_n100"] = float(v[100])
    return md


def redundancy_metadata(s) -> dict:
    return {
        "threshold": s.threshold,
        "n_neurons": s.n_neurons,
        "n_independent": s.n_independent,
        "n_constant": s.n_constant,
        "seconds": s.seconds,
        "layers": _md_table(["layer", "neurons", "constant", "clusters", "independent", "largest cluster"],
                            [[r["layer"], r["n_neurons"], r["n_constant"], r["n_clusters"], r["n_independent"],
                              r["largest_cluster"]] for r in s.layers]),
    }


def selectivity_metadata(s) -> dict:
    md: dict = {"k": s.k, "seconds": s.seconds}
    for r in s.rows:
        md[f"selectivity_{r['method']}"] = float(r["selectivity"])
    md["selectivity"] = _md_table(["neurons", "k", "task", "control", "selectivity"],
                                  [[r["method"], r["k"], f"{r['task_accuracy']:.4f}", f"{r['control_accuracy']:.4f}",
                                    f"{r['selectivity']:.4f}"] for r in s.rows])
    md["layers"] = _md_table(["layer", "accuracy", "control", "selectivity"],
                             [[r["layer"], f"{r['accuracy']:.4f}", f"{r['control_accuracy']:.4f}",
                               f"{r['selectivity']:.4f}"] for r in s.layers])
    return md


def ablation_metadata(s) -> dict:
    rows = [r for r in s.rows if r["mode"] != "full"]
    agg: dict = {}
    for r in rows:
        agg.setdefault((r["method"], r["k"], r["mode"], r["zero_value"] or "", r["selection"]), []).append(r["accuracy"])
    return {"methods": ", ".join(s.methods), "seconds": s.seconds,
            "ablation": _md_table(["method", "k", "mode", "fill", "selection", "accuracy"],
                                  [[m, k, mode, fill, sel, f"{sum(v) / len(v):.4f}"]
                                   for (m, k, mode, fill, sel), v in agg.items()])}


def interventions_metadata(s) -> dict:
    rows = [r for r in s.rows if r["group"] == "concept" and r["metric"] == "accuracy"
            and r["top_k"] == min(x["top_k"] for x in s.rows)] if s.rows else []
    md = {"classes": ", ".join(s.classes), "methods": ", ".join(s.methods), "seconds": s.seconds,
          "mlm_head": dg.MetadataValue.json(s.head)}
    if rows:
        md["accuracy_drop"] = _md_table(
            ["class", "method", "baseline", "top-k ablated", "random-k ablated (95% interval)"],
            [[r["label"], r["method"], f"{r['baseline']:.3f}", f"{r['top']:.3f}",
              f"{r['random_mean']:.3f} [{r['random_low']:.3f}, {r['random_high']:.3f}]"] for r in rows])
    return md


def class_neurons_metadata(s) -> dict:
    return {"method": s.method, "seconds": s.seconds,
            "minimal_neurons": _md_table(["label", "neurons", "F1 reached", "target", "full F1"],
                                         [[r["label"], r["n_neurons"] if r["n_neurons"] is not None else "not reached",
                                           f"{r['reached_f1']:.3f}" if r["reached_f1"] is not None else "–",
                                           f"{r['target_f1']:.3f}" if r["target_f1"] is not None else "–",
                                           f"{r['full_f1']:.3f}" if r["full_f1"] is not None else "–"]
                                          for r in s.minimal])}


def report_metadata(s) -> dict:
    md: dict = {
        "accuracy": float(s.accuracy),
        "majority_baseline": float(s.majority_baseline),
        "methods": ", ".join(s.methods),
        "n_test_words": s.n_test,
        "n_test_unseen_label": s.n_test_unseen_label,
        "report_html": dg.MetadataValue.path(s.html_path),
        "report": dg.MetadataValue.md(report_markdown(s)),
        "evaluation_seconds": s.seconds,
    }
    for r in s.selections:
        who = "random" if r["selection"] == "random" else f"{r['method']}_{r['selection']}"
        md[f"accuracy_{who}_{100 * r['fraction']:g}pct"] = float(r["accuracy"])
    for r in s.extra.get("selectivity", []):
        md[f"selectivity_{r['method']}"] = float(r["selectivity"])
    for r in s.per_class:
        if r.get("f1") is not None:
            md[f"f1_{r['label']}"] = float(r["f1"])
    return md


def drift_metadata(s) -> dict:
    md: dict = {"model_label": s.label, "previous_label": s.previous_label or "(none: first version)",
                "n_alerts": s.n_alerts, "drift_seconds": s.seconds}
    if s.html_path:
        md["report_html"] = dg.MetadataValue.path(s.html_path)
    if s.previous_label is None:
        return md
    ks = sorted({r["k"] for r in s.ranking if r.get("k") is not None})
    both = [r for r in s.ranking if r.get("status") == "both"]
    for r in both:
        if r["k"] == ks[-1] and r.get("jaccard") is not None:
            md[f"jaccard_{r['method']}_top{r['k']}"] = float(r["jaccard"])
        if r["k"] == ks[0] and r.get("spearman") is not None:
            md[f"spearman_{r['method']}"] = float(r["spearman"])
    overall = next((r for r in s.metrics if r["label"] == "(all)"), None)
    if overall and overall.get("accuracy_delta") is not None:
        md["accuracy_delta"] = float(overall["accuracy_delta"])
    if overall and overall.get("selectivity_delta") is not None:
        md["selectivity_delta"] = float(overall["selectivity_delta"])
    for r in s.layers:
        if r.get("corr_median") is not None:
            md[f"unit_correlation_layer{r['layer']}"] = float(r["corr_median"])
    methods = list(dict.fromkeys(r["method"] for r in both))
    md["ranking_drift"] = _md_table(
        ["method", *[f"Jaccard top {k}" for k in ks], "Spearman"],
        [[m, *[next((f"{r['jaccard']:.2f}" for r in both if r["method"] == m and r["k"] == k
                     and r.get("jaccard") is not None), "–") for k in ks],
          next((f"{r['spearman']:.3f}" for r in both if r["method"] == m and r.get("spearman") is not None), "–")]
         for m in methods])
    md["alerts"] = _md_table(["kind", "method", "label", "k", "message"],
                             [[a["kind"], a.get("method") or "", a.get("label") or "", a.get("k") or "", a["message"]]
                              for a in s.alerts]) if s.alerts else dg.MetadataValue.md("No threshold crossed.")
    return md
