"""Adapters trained with athena on MiniLM load in PEFT and reproduce athena's outputs.

The acceptance check of the athena issue, as a script: train a LoRA-only and an IA³-only
PolyAdapter (the `poly_lora` and `poly_ia3` methods of `_athena_bench`) on LexSent, save each
with `AthenaModel.save_pretrained`, load the folder with `peft.PeftModel.from_pretrained` onto a
fresh copy of the same base model, and compare the logits of both on the whole test split
(maximum absolute difference, and whether the predictions agree), plus test accuracy of each.
The file format is checked on the way: `peft_type`, and the tensor names of the file against
the ones PEFT writes when it saves the loaded model again.

`--quick`: 20 training steps. Run: `uv run python -m benchmarks.bench_athena_peft_load`.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file

from benchmarks import _athena_bench as ab
from benchmarks._lexsent import build_lexsent, config_for, encode, load_tokenizer
from benchmarks.harness import common_parser, markdown_table, write_results

DEFAULT_LR = {"poly_lora": 1e-3, "poly_ia3": 1e-2}


@torch.no_grad()
def _logits(model: torch.nn.Module, data: dict[str, torch.Tensor]) -> torch.Tensor:
    model.eval()
    parts = [
        model(
            input_ids=data["input_ids"][s : s + 256],
            attention_mask=data["attention_mask"][s : s + 256],
        ).logits
        for s in range(0, data["labels"].shape[0], 256)
    ]
    return torch.cat(parts)


def check(
    method: str, splits: dict[str, dict[str, torch.Tensor]], steps: int, lr: float, folder: Path
) -> dict[str, Any]:
    """Train `method`, save it, load it in PEFT, compare."""
    import peft

    model = ab.build(method, seed=0)
    ab.train(model, splits["train"], steps=steps, lr=lr, seed=0)
    model.save_pretrained(folder)  # type: ignore[operator]
    saved = json.loads((folder / "adapter_config.json").read_text())
    theirs = peft.PeftModel.from_pretrained(ab.fresh_classifier(seed=0), folder)
    test = splits["test"]
    ours_logits, their_logits = _logits(model, test), _logits(theirs, test)
    resaved = folder / "resaved"
    theirs.save_pretrained(str(resaved))
    keys_ours = sorted(load_file(folder / "adapter_model.safetensors"))
    keys_theirs = sorted(load_file(resaved / "adapter_model.safetensors"))
    labels = test["labels"]
    return {
        "method": method,
        "steps": steps,
        "lr": lr,
        "peft_type": saved["peft_type"],
        "max_abs_logit_diff": float((ours_logits - their_logits).abs().max()),
        "predictions_agree": bool((ours_logits.argmax(-1) == their_logits.argmax(-1)).all()),
        "acc_athena": float((ours_logits.argmax(-1) == labels).float().mean()),
        "acc_peft": float((their_logits.argmax(-1) == labels).float().mean()),
        "same_tensor_names": keys_ours == keys_theirs,
        "num_tensors": len(keys_ours),
        "file_bytes": (folder / "adapter_model.safetensors").stat().st_size,
    }


def main(argv: list[str] | None = None) -> None:
    parser = common_parser("athena-trained adapters loaded by PEFT: same outputs")
    parser.add_argument("--steps", type=int, default=None, help="training steps (150; quick 20)")
    parser.add_argument("--lr-lora", type=float, default=DEFAULT_LR["poly_lora"])
    parser.add_argument("--lr-ia3", type=float, default=DEFAULT_LR["poly_ia3"])
    args: argparse.Namespace = parser.parse_args(argv)
    lrs = {"poly_lora": args.lr_lora, "poly_ia3": args.lr_ia3}
    torch.set_num_threads(args.threads)
    steps = args.steps or (20 if args.quick else 150)
    tokenizer = load_tokenizer()
    data = build_lexsent(tokenizer, config_for(quick=args.quick))
    splits = {name: encode(data.split(name), tokenizer) for name in ("train", "test")}
    records = []
    with tempfile.TemporaryDirectory() as tmp:
        for method, lr in lrs.items():
            records.append(check(method, splits, steps, lr, Path(tmp) / method))
    rows = [
        [
            r["method"],
            r["peft_type"],
            f"{r['max_abs_logit_diff']:.2e}",
            "yes" if r["predictions_agree"] else "NO",
            f"{100 * r['acc_athena']:.2f}",
            f"{100 * r['acc_peft']:.2f}",
            "yes" if r["same_tensor_names"] else "NO",
        ]
        for r in records
    ]
    text = (
        f"Trained with athena for {steps} steps on LexSent (seed 0), saved with "
        "`AthenaModel.save_pretrained`, loaded with `peft.PeftModel.from_pretrained` on a fresh "
        f"MiniLM classifier; logits compared on the {splits['test']['labels'].shape[0]} test "
        "sentences.\n\n"
    )
    text += markdown_table(
        [
            "adapter",
            "peft_type",
            "max abs logit diff",
            "predictions agree",
            "acc athena %",
            "acc PEFT %",
            "same tensor names as PEFT's own save",
        ],
        rows,
    )
    config = {"steps": steps, "lr": lrs, "quick": args.quick}
    folder = write_results(
        "athena", "peft_load", config=config, records=records, markdown=text, out_dir=args.out
    )
    print(text)
    print(f"results in {folder}")


if __name__ == "__main__":
    main()
