"""INL LM parameter counts: shared vs per-layer controllers, low-rank vs full embeddings, tied vs
untied head — the model card's "96% fewer parameters" claim checked against the counts.

Spec inl-llm §5 (d). Every model is instantiated on the ``meta`` device (no memory is allocated, so
the 1.3-billion-parameter default configuration costs nothing) and counted three ways that must
agree exactly: ``sum(p.numel())`` over the distinct parameters, ``sum`` of
``INLForCausalLM.num_parameters_by_component()`` and the closed form
``INLLLMConfig.expected_num_parameters()`` (the run stops otherwise). Configurations: the
``INLLLMConfig`` defaults (the original model: d 1728, 25 layers, vocab 50261, ff 6912) and the
presets ``small``, ``medium`` and ``large`` (vocab 50261), each with per-layer vs shared controllers
× low-rank vs full embeddings × untied vs tied head.

Reported: the controller parameters per-layer (L controllers of ≈ 387·D parameters each at hidden
width 64 — the spec's ≈ 384·D plus biases) and shared (one controller plus 2·3 FiLM parameters per
layer), the saving as a percentage of (i) the controller parameters (1 − 1/L less the FiLM
overhead: the only reading of the card's number that holds), (ii) the whole model and (iii) the
non-embedding parameters (everything except the token embedding and the head); and what the
low-rank embedding saves of the embedding, of embedding + untied head (the original's savings claim
ignored the untied head) and of the whole model, and what tying the head would save. The verdict
paragraph is computed from the counts.

``--quick`` and ``--gpu`` count the same models (counting takes about a second anywhere).

Run: ``uv run python -m benchmarks.bench_inl_params``.
"""

from __future__ import annotations

import argparse
import itertools
import time
from typing import Any

import torch

from benchmarks.harness import common_parser, markdown_table, write_results
from inl_llm.configuration_inl import INLLLMConfig
from inl_llm.modeling_inl import INLForCausalLM

CARD_CLAIM_PERCENT = 96.0  # the model card: the shared controller gives "96% fewer parameters"
CONFIGS: tuple[str, ...] = ("default", "small", "medium", "large")


def make_config(name: str, **overrides: Any) -> INLLLMConfig:
    """``INLLLMConfig(**overrides)`` for ``"default"``, else the named preset."""
    if name == "default":
        return INLLLMConfig(**overrides)
    return INLLLMConfig.from_preset(name, **overrides)


def count(config: INLLLMConfig) -> dict[str, Any]:
    """Counts of one configuration, built on the meta device; the three counts must agree."""
    with torch.device("meta"):
        model = INLForCausalLM(config)
    total = sum(int(p.numel()) for p in model.parameters())
    components = model.num_parameters_by_component()
    expected = config.expected_num_parameters()
    if not total == sum(components.values()) == expected:
        raise RuntimeError(
            f"parameter counts disagree: sum(p.numel()) {total}, "
            f"num_parameters_by_component {sum(components.values())} ({components}), "
            f"expected_num_parameters {expected}"
        )
    return {
        "total": total,
        "non_embedding": total - components["embedding"] - components["lm_head"],
        "components": components,
        "expected_num_parameters": expected,
    }


def controller_saving(per_layer: dict[str, Any], shared: dict[str, Any]) -> dict[str, Any]:
    """What sharing the controller saves, from the counts of the two otherwise equal models."""
    ctrl_layer = per_layer["components"]["inl_controller"]
    ctrl_shared = shared["components"]["inl_controller"]
    film = shared["components"]["inl_other"] - per_layer["components"]["inl_other"]
    saved = per_layer["total"] - shared["total"]
    if saved != ctrl_layer - ctrl_shared - film:
        raise RuntimeError(
            f"the shared model differs by {saved} parameters, not by the controller saving "
            f"{ctrl_layer} - {ctrl_shared} - {film}"
        )
    return {
        "controllers_per_layer": ctrl_layer,
        "controller_shared": ctrl_shared,
        "film": film,
        "saved": saved,
        "pct_of_controllers": 100.0 * saved / ctrl_layer,
        "pct_of_controllers_without_film": 100.0 * (1.0 - ctrl_shared / ctrl_layer),
        "pct_of_model": 100.0 * saved / per_layer["total"],
        "pct_of_non_embedding": 100.0 * saved / per_layer["non_embedding"],
        "total_per_layer": per_layer["total"],
        "total_shared": shared["total"],
    }


def embedding_saving(
    lowrank_untied: dict[str, Any], full_untied: dict[str, Any], lowrank_tied: dict[str, Any]
) -> dict[str, Any]:
    """What the low-rank embedding and a tied head save (shared controllers)."""
    emb_lr = lowrank_untied["components"]["embedding"]
    emb_full = full_untied["components"]["embedding"]
    head = lowrank_untied["components"]["lm_head"]
    return {
        "embedding_full": emb_full,
        "embedding_lowrank": emb_lr,
        "lm_head_untied": head,
        "pct_of_embedding": 100.0 * (emb_full - emb_lr) / emb_full,
        "pct_of_embedding_and_head": 100.0 * (emb_full - emb_lr) / (emb_full + head),
        "pct_of_model": 100.0
        * (full_untied["total"] - lowrank_untied["total"])
        / full_untied["total"],
        "head_pct_of_model": 100.0 * head / lowrank_untied["total"],
        "tying_saves_pct_of_model": 100.0
        * (lowrank_untied["total"] - lowrank_tied["total"])
        / lowrank_untied["total"],
        "total_lowrank_untied": lowrank_untied["total"],
        "total_full_untied": full_untied["total"],
        "total_lowrank_tied": lowrank_tied["total"],
    }


def analyse(names: tuple[str, ...] = CONFIGS) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Count every variant of every configuration; return the raw records and the summaries."""
    records: list[dict[str, Any]] = []
    summary: dict[str, Any] = {}
    for name in names:
        counted: dict[tuple[bool, bool, bool], dict[str, Any]] = {}
        for shared, lowrank, tied in itertools.product((False, True), repeat=3):
            config = make_config(
                name,
                use_shared_controllers=shared,
                use_lowrank_embeddings=lowrank,
                tie_word_embeddings=tied,
            )
            c = count(config)
            counted[shared, lowrank, tied] = c
            records.append(
                {
                    "config": name,
                    "d_model": config.d_model,
                    "num_layers": config.num_layers,
                    "vocab_size": config.vocab_size,
                    "feedforward_dim": config.feedforward_dim,
                    "embedding_rank": config.embedding_rank,
                    "shared_controller": shared,
                    "lowrank_embeddings": lowrank,
                    "tied_head": tied,
                    **c,
                }
            )
        config = make_config(name)
        summary[name] = {
            "d_model": config.d_model,
            "num_layers": config.num_layers,
            "vocab_size": config.vocab_size,
            "embedding_rank": config.embedding_rank,
            # the original layout: low-rank embeddings, untied head
            "controllers": controller_saving(
                counted[False, True, False], counted[True, True, False]
            ),
            "embeddings": embedding_saving(
                counted[True, True, False], counted[True, False, False], counted[True, True, True]
            ),
        }
    return records, summary


def verdict(summary: dict[str, Any]) -> str:
    """The one-paragraph verdict, every number taken from ``summary``."""
    default = summary["default"]
    c, e = default["controllers"], default["embeddings"]
    layers, d = default["num_layers"], default["d_model"]
    holds = round(c["pct_of_controllers"]) == round(CARD_CLAIM_PERCENT)
    others = "; ".join(
        f"{name} ({s['num_layers']} layers) {s['controllers']['pct_of_controllers']:.1f}% of the "
        f"controllers, {s['controllers']['pct_of_model']:.2f}% of the model"
        for name, s in summary.items()
        if name != "default"
    )
    return (
        f"In the default (original) configuration — d {d}, {layers} layers, vocabulary "
        f"{default['vocab_size']:,} — the {layers} per-layer controllers hold "
        f"{c['controllers_per_layer']:,} parameters; one shared controller holds "
        f"{c['controller_shared']:,} plus {c['film']:,} FiLM parameters, a saving of "
        f"{c['saved']:,} parameters. That is {c['pct_of_controllers']:.3f}% of the controller "
        f"parameters (1 − 1/L = {100 * (1 - 1 / layers):.3f}%, less the FiLM overhead), so the "
        f"card's \u201c{CARD_CLAIM_PERCENT:g}% fewer parameters\u201d "
        + (
            "is right only as a statement about the controllers"
            if holds
            else "does not match even the controllers alone"
        )
        + f": the whole model shrinks by {c['pct_of_model']:.2f}% "
        f"({c['total_per_layer']:,} → {c['total_shared']:,}), and its non-embedding parameters "
        f"by {c['pct_of_non_embedding']:.2f}%. With fewer layers the controller saving is "
        f"smaller: {others}. The low-rank embedding (r = {default['embedding_rank']}) cuts the "
        f"input embedding by {e['pct_of_embedding']:.1f}%, but the untied head keeps "
        f"{e['lm_head_untied']:,} parameters ({e['head_pct_of_model']:.1f}% of the model), so "
        f"embedding plus head shrink by only {e['pct_of_embedding_and_head']:.1f}% and the whole "
        f"model by {e['pct_of_model']:.2f}%; tying the head would save another "
        f"{e['tying_saves_pct_of_model']:.2f}% of the model."
    )


def _markdown(summary: dict[str, Any], records: list[dict[str, Any]]) -> str:
    md = [
        "Counted on the `meta` device; `sum(p.numel())`, `num_parameters_by_component()` and "
        "`expected_num_parameters()` agree exactly for every variant. Savings are measured "
        "in the original layout (low-rank embeddings, untied head). Non-embedding = all "
        "parameters except the token embedding and the head.\n",
        "## Shared vs per-layer INL controllers\n",
        markdown_table(
            [
                "config",
                "D",
                "L",
                "controllers, per-layer",
                "controller, shared",
                "FiLM",
                "saved",
                "% of controllers",
                "1 − shared/per-layer (no FiLM)",
                "model, per-layer",
                "model, shared",
                "% of model",
                "% of non-embedding",
            ],
            [
                [
                    name,
                    s["d_model"],
                    s["num_layers"],
                    f"{c['controllers_per_layer']:,}",
                    f"{c['controller_shared']:,}",
                    f"{c['film']:,}",
                    f"{c['saved']:,}",
                    f"{c['pct_of_controllers']:.3f}%",
                    f"{c['pct_of_controllers_without_film']:.3f}%",
                    f"{c['total_per_layer']:,}",
                    f"{c['total_shared']:,}",
                    f"{c['pct_of_model']:.2f}%",
                    f"{c['pct_of_non_embedding']:.2f}%",
                ]
                for name, s in summary.items()
                for c in [s["controllers"]]
            ],
        ),
        "\n## Low-rank vs full embeddings, tied vs untied head (shared controllers)\n",
        markdown_table(
            [
                "config",
                "V",
                "D",
                "r",
                "embedding, full",
                "embedding, low-rank",
                "% of embedding",
                "% of embedding + untied head",
                "% of model",
                "untied head",
                "head % of model",
                "model, tied head",
                "tying saves % of model",
            ],
            [
                [
                    name,
                    f"{s['vocab_size']:,}",
                    s["d_model"],
                    s["embedding_rank"],
                    f"{e['embedding_full']:,}",
                    f"{e['embedding_lowrank']:,}",
                    f"{e['pct_of_embedding']:.1f}%",
                    f"{e['pct_of_embedding_and_head']:.1f}%",
                    f"{e['pct_of_model']:.2f}%",
                    f"{e['lm_head_untied']:,}",
                    f"{e['head_pct_of_model']:.1f}%",
                    f"{e['total_lowrank_tied']:,}",
                    f"{e['tying_saves_pct_of_model']:.2f}%",
                ]
                for name, s in summary.items()
                for e in [s["embeddings"]]
            ],
        ),
        "\n## Verdict\n\n" + verdict(summary) + "\n",
        "\n## Every variant (components)\n",
        markdown_table(
            [
                "config",
                "controller",
                "embedding",
                "head",
                "total",
                "non-embedding",
                *next(iter(records))["components"],
            ],
            [
                [
                    r["config"],
                    "shared" if r["shared_controller"] else "per-layer",
                    "low-rank" if r["lowrank_embeddings"] else "full",
                    "tied" if r["tied_head"] else "untied",
                    f"{r['total']:,}",
                    f"{r['non_embedding']:,}",
                    *(f"{v:,}" for v in r["components"].values()),
                ]
                for r in records
            ],
        ),
    ]
    return "\n".join(md)


def _parse(argv: list[str] | None) -> argparse.Namespace:
    return common_parser("INL LM parameter counts: the shared-controller claim").parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = _parse(argv)
    start = time.perf_counter()
    records, summary = analyse()
    md = _markdown(summary, records)
    seconds = time.perf_counter() - start
    config = {
        "configs": list(CONFIGS),
        "variants": "use_shared_controllers × use_lowrank_embeddings × tie_word_embeddings",
        "device": "meta",
        "card_claim_percent": CARD_CLAIM_PERCENT,
        "quick": args.quick,
        "wall_time_s": seconds,
    }
    folder = write_results(
        "inl-llm",
        "params",
        config=config,
        records=[*records, {"summary": summary, "verdict": verdict(summary)}],
        markdown=md,
        out_dir=args.out,
        device="cpu",
    )
    print(md)
    print(f"wrote {folder}/params.md")


if __name__ == "__main__":
    main()
