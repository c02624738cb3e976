"""The Celery app of a neuro-pipeline worker: ``neuro-pipeline worker`` runs
``celery -A assets.celery_worker worker``.

It is dagster-celery's own step task (``execute_plan``: one Dagster step, run in this worker
with the run's instance) on the broker and results backend of ``execution`` in the analysis
configuration (``NEURO_PIPELINE_CONFIG``), so the workers and the run that sends them steps
read one file. The step reloads the code location (``assets.definitions``) in the worker.
"""

import os

from dagster_celery.executor import CeleryExecutor
from dagster_celery.make_app import make_app
from dagster_celery.tasks import create_task

from neuro_pipeline.config import load_config

from .resources import CONFIG_ENV

_execution = load_config(os.environ.get(CONFIG_ENV) or None, deep=False).execution

app = make_app(CeleryExecutor.for_cli(broker=_execution.broker, backend=_execution.backend).app_args())

execute_plan = create_task(app)
