"""The Dagster code location of neuro-pipeline: thin assets over the ``neuro_pipeline`` library."""
