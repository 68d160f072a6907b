"""The main job (``lit-compress pipeline``)."""

from lit_compress.pipeline.config import DataConfig, DistillConfig, TeacherConfig, TrainConfig
from lit_compress.pipeline.context import RunContext
from lit_compress.pipeline.run import run_pipeline

__all__ = ["DataConfig", "DistillConfig", "RunContext", "TeacherConfig", "TrainConfig", "run_pipeline"]
