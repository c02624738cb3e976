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

    def load(self) -> PipelineConfig:
        return load_config(self.config_path or None)

    def store(self, cfg: PipelineConfig | None = None) -> Store:
        return Store((cfg or self.load()).store_path)


def make_resources(config_path: str | None = None) -> dict[str, object]:
    path = config_path if config_path is not None else os.environ.get(CONFIG_ENV, "")
    return {"pipeline": PipelineResource(config_path=path)}
