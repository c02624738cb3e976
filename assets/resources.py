"""Resources: where the analysis configuration and the DuckDB store are."""

import os

import dagster as dg

from neuro_pipeline.config import PipelineConfig, load_config
from neuro_pipeline.store import Store

#: Environment variable naming the pipeline.yaml to analyse (unset: the embedded default).
CONFIG_ENV = "NEURO_PIPELINE_CONFIG"


class PipelineResource(dg.ConfigurableResource):
    """The analysis configuration (a pipeline.yaml, or the embedded default when empty)."""

    config_path: str = ""

    def load(self, context: dg.AssetExecutionContext | dg.AssetCheckExecutionContext | None = None) -> PipelineConfig:
        """The configuration; inside a partitioned run (a model registry), the one of that
        partition's model version."""
        cfg = load_config(self.config_path or None)
        key = _partition_key(context)
        return cfg.for_model_version(key) if key is not None else cfg

    def store(self, cfg: PipelineConfig | None = None) -> Store:
        return Store((cfg or self.load()).store_path)


def _partition_key(context) -> str | None:
    if context is None:
        return None
    run = getattr(context, "run", None) or getattr(context, "dagster_run", None)
    if isinstance(context, dg.AssetExecutionContext):
        return context.partition_key if context.has_partition_key else None
    key = run.tags.get("dagster/partition") if run is not None else None
    return key or None


def make_resources(config_path: str | None = None) -> dict[str, object]:
    path = config_path if config_path is not None else os.environ.get(CONFIG_ENV, "")
    return {"pipeline": PipelineResource(config_path=path)}
