"""Catalogue-scale batch inference: tag or embed a whole manifest into resumable parquet shards, in this process
(``local``) or with Ray Data (``ray``, the optional ``fashionlens[ray]`` extra) on one machine or a cluster."""

from fashionlens.inference.engines import (
    DEFAULT_SHARD_SIZE,
    ENGINES,
    Engine,
    JobResult,
    LocalEngine,
    make_engine,
    run_job,
    shard_folder,
)
from fashionlens.inference.models import BatchModel, ModelSpec
from fashionlens.inference.ray_engine import RayEngine
from fashionlens.inference.results import (
    catalogue_index_from_shards,
    embeddings_from_shards,
    hierarchy_from_shards,
    predictions_from_shards,
)
from fashionlens.inference.shards import ShardArrays, ShardPlan, plan_job, read_arrays, read_table

__all__ = [
    "DEFAULT_SHARD_SIZE",
    "ENGINES",
    "BatchModel",
    "Engine",
    "JobResult",
    "LocalEngine",
    "ModelSpec",
    "RayEngine",
    "ShardArrays",
    "ShardPlan",
    "catalogue_index_from_shards",
    "embeddings_from_shards",
    "hierarchy_from_shards",
    "make_engine",
    "plan_job",
    "predictions_from_shards",
    "read_arrays",
    "read_table",
    "run_job",
    "shard_folder",
]
