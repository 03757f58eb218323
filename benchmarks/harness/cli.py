"""Command-line conventions shared by every benchmark: --quick, --gpu, --seeds, --data, threads."""

from __future__ import annotations

import argparse
import random

import torch

from .data import Corpus, load_corpus


def common_parser(description: str) -> argparse.ArgumentParser:
    """An argument parser with the options every benchmark accepts."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument(
        "--quick", action="store_true", help="smoke size, about a minute on 2 CPU cores"
    )
    parser.add_argument("--gpu", action="store_true", help="accelerator sizes (needs CUDA)")
    parser.add_argument(
        "--seeds", type=int, default=None, help="number of seeds (default: per benchmark)"
    )
    parser.add_argument(
        "--data", default=None, help="a text file to use instead of the built-in corpora"
    )
    parser.add_argument(
        "--corpus",
        choices=("auto", "pydoc", "shakespeare"),
        default="auto",
        help="auto: pydoc for --quick, shakespeare otherwise",
    )
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads (default 2)")
    parser.add_argument("--out", default="docs/results", help="results folder")
    parser.add_argument(
        "--device", default=None, help="torch device (default: cuda with --gpu, else cpu)"
    )
    parser.add_argument("--no-progress", action="store_true", help="hide progress bars")
    return parser


def seed_everything(seed: int) -> None:
    """Seed Python's and torch's generators (CPU and CUDA)."""
    random.seed(seed)
    torch.manual_seed(seed)


def setup_run(args: argparse.Namespace) -> torch.device:
    """Fix the thread count and return the device the arguments ask for."""
    torch.set_num_threads(args.threads)
    name = args.device or ("cuda" if args.gpu else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--gpu/--device cuda given but no CUDA device is available")
    return device


def corpus_for_args(args: argparse.Namespace) -> Corpus:
    """The corpus the arguments select: --data, else --corpus, else pydoc for --quick."""
    if args.data:
        return load_corpus("pydoc", args.data)
    if args.corpus == "auto":
        return load_corpus("pydoc" if args.quick else "shakespeare")
    return load_corpus("pydoc" if args.corpus == "pydoc" else "shakespeare")
