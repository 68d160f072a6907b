"""The main job (``lit-compress pipeline``): a sequence of ``lit-compress fit`` recipes, one per stage."""

from lit_compress.pipeline.config import BenchmarkOptions, PruneOptions, QATOptions, TeacherOptions
from lit_compress.pipeline.context import Deployable, PrunedModel, QuantizedModel, RunContext, TrainedModel
from lit_compress.pipeline.run import RunResults, run_pipeline
from lit_compress.pipeline.search import SearchOptions, SearchResult

__all__ = ["BenchmarkOptions", "Deployable", "PruneOptions", "PrunedModel", "QATOptions", "QuantizedModel",
           "RunContext", "RunResults", "SearchOptions", "SearchResult", "TeacherOptions", "TrainedModel",
           "run_pipeline"]
