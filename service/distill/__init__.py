"""Distillation: from approved principles to a candidate adapter (the refinement job).

`recipe` is what a job runs with, `pipeline` the compute with no store (bench/c3po.py runs it
too), `job` one job's stages kept on disk and its registration, `worker` the queue loop and the
scheduler that starts workers. Public API (what scripts outside the service may import): the
names below.
"""

from service.distill.corrections import correction_rows, evaluate_corrections
from service.distill.pipeline import build_dataset, evaluate, report_table, train_adapter, training_rows
from service.distill.recipe import RECIPE, Recipe, check_params, with_recipe

__all__ = ["correction_rows", "evaluate_corrections", "build_dataset", "evaluate", "report_table", "train_adapter", "training_rows", "RECIPE", "Recipe",
           "check_params", "with_recipe"]
