"""Shared benchmark harness: corpora, the reference GPT, training, timing, statistics, results."""

from .cli import common_parser, corpus_for_args, seed_everything, setup_run
from .data import Corpus, bits_per_byte, get_batch, load_corpus
from .model import GPT, MLP, Block, CausalSelfAttention, GPTConfig, PlainResidual, make_norm
from .progress import progress
from .results import (
    MAX_RESULT_BYTES,
    downsample,
    environment,
    git_state,
    markdown_table,
    write_results,
)
from .stats import (
    MeanInterval,
    mean_std,
    paired_t_interval,
    student_t_quantile,
    t_interval,
    wilson_interval,
)
from .timing import Timing, count_aten_ops, count_host_syncs, interleaved_timing
from .train import LossModel, TrainLog, cosine_schedule, estimate_loss, train_lm
from .tuning import fixed_lr, score, select_lr

__all__ = [
    "GPT",
    "MAX_RESULT_BYTES",
    "MLP",
    "Block",
    "CausalSelfAttention",
    "Corpus",
    "GPTConfig",
    "LossModel",
    "MeanInterval",
    "PlainResidual",
    "Timing",
    "TrainLog",
    "bits_per_byte",
    "common_parser",
    "corpus_for_args",
    "cosine_schedule",
    "count_aten_ops",
    "count_host_syncs",
    "downsample",
    "environment",
    "estimate_loss",
    "fixed_lr",
    "get_batch",
    "git_state",
    "interleaved_timing",
    "load_corpus",
    "make_norm",
    "markdown_table",
    "mean_std",
    "paired_t_interval",
    "progress",
    "score",
    "seed_everything",
    "select_lr",
    "setup_run",
    "student_t_quantile",
    "t_interval",
    "train_lm",
    "wilson_interval",
    "write_results",
]
