#!/usr/bin/env bash
# Set everything up and run the embedded default analysis through Dagster.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
exec .venv/bin/neuro-pipeline run "$@"
