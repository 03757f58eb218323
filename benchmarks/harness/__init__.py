"""Shared benchmark harness: corpora, the reference GPT, training, timing, statistics, results."""

from .cli import common_parser, corpus_for_args, seed_everything, setup_run
from .data import Corpus, bits_per_byte, get_batch, load_corpus
from .model import GPT, MLP, Block, CausalSelfAttention, GPTConfig, PlainResidual, make_norm
from .progress import progress
from .results import environment, markdown_table, write_results
from .stats import bootstrap_ci, mean_std, wilson_interval
from .timing import Timing, count_host_syncs, interleaved_timing
from .train import TrainLog, cosine_schedule, estimate_loss, train_lm

__all__ = [
    "GPT",
    "MLP",
    "Block",
    "CausalSelfAttention",
    "Corpus",
    "GPTConfig",
    "PlainResidual",
    "Timing",
    "TrainLog",
    "bits_per_byte",
    "bootstrap_ci",
    "common_parser",
    "corpus_for_args",
    "cosine_schedule",
    "count_host_syncs",
    "environment",
    "estimate_loss",
    "get_batch",
    "interleaved_timing",
    "load_corpus",
    "make_norm",
    "markdown_table",
    "mean_std",
    "progress",
    "seed_everything",
    "setup_run",
    "train_lm",
    "wilson_interval",
    "write_results",
]
