"""The model card's usage code, verbatim, against a folder written by ``inl-llm-train``.

It runs in a subprocess with ``HF_HUB_OFFLINE=1`` in which ``inl_llm`` cannot be imported, so the
model comes only from the ``trust_remote_code`` files ``save_pretrained`` copied into the folder.
"""

import json
import os
import subprocess
import sys

import pytest

from inl_llm.train import main

# The usage code as the issue states it, with `path` a local folder.
ISSUE_USAGE = """\
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer
tokenizer = AutoTokenizer.from_pretrained(path)
model = AutoModelForCausalLM.from_pretrained(path, trust_remote_code=True, dtype=torch.bfloat16)
inputs = tokenizer("The integrator", return_tensors="pt")
out = model.generate(**inputs, max_new_tokens=100, temperature=0.8, do_sample=True, use_cache=True)
print(tokenizer.decode(out[0], skip_special_tokens=True))
messages = [{"role": "user", "content": "What is a closure?"}]
ids = tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt")
from transformers import pipeline
pipe = pipeline("text-generation", model=path, trust_remote_code=True)
print(pipe("The integrator", max_new_tokens=20)[0]["generated_text"])
"""

# The usage section of the model card (docs/inl-llm.md). In transformers 5.23 apply_chat_template
# returns a BatchEncoding (input_ids and attention_mask), so it is unpacked into generate; and
# AutoTokenizer reads config.json first, whose auto_map makes it ask whether to run custom code
# unless trust_remote_code is given (without an answer it falls back to the plain tokenizer).
CARD_USAGE = """\
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer
tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=True)
model = AutoModelForCausalLM.from_pretrained(path, trust_remote_code=True, dtype=torch.bfloat16)
inputs = tokenizer("The integrator", return_tensors="pt")
out = model.generate(**inputs, max_new_tokens=100, temperature=0.8, do_sample=True, use_cache=True)
print(tokenizer.decode(out[0], skip_special_tokens=True))
messages = [{"role": "user", "content": "What is a closure?"}]
inputs = tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt")
out = model.generate(**inputs, max_new_tokens=50, do_sample=False)
print(tokenizer.decode(out[0][inputs["input_ids"].shape[1]:], skip_special_tokens=True))
from transformers import pipeline
pipe = pipeline("text-generation", model=path, trust_remote_code=True)
print(pipe("The integrator", max_new_tokens=20)[0]["generated_text"])
"""

# Runs the card, then checks what it left behind and prints one JSON line of results.
_DRIVER = """\
import importlib.util, json, sys
sys.modules["inl_llm"] = None  # not importable: only the checkpoint's own code may be used
path = sys.argv[1]
import torch
for card in sys.argv[2:]:
    torch.manual_seed(0)
    namespace = {"path": path}
    exec(compile(card, "model-card", "exec"), namespace)
tokenizer, model, pipe = namespace["tokenizer"], namespace["model"], namespace["pipe"]
from transformers import AutoModelForCausalLM, AutoTokenizer
prompt = tokenizer("The integrator", return_tensors="pt")
result = {"model_module": type(model).__module__, "dtype": str(model.dtype)}
for dtype in ("bfloat16", "float32"):
    m = model if dtype == "bfloat16" else AutoModelForCausalLM.from_pretrained(
        path, trust_remote_code=True, dtype=torch.float32)
    for penalty in (1.0, 2.0):  # the penalty makes a barely trained model vary its tokens
        runs = [m.generate(**prompt, max_new_tokens=24, do_sample=False, use_cache=c,
                           repetition_penalty=penalty)[0].tolist() for c in (True, False)]
        result[f"greedy_{dtype}_{penalty}"] = runs
torch.manual_seed(1)
sampled = model.generate(**prompt, max_new_tokens=100, temperature=0.8, do_sample=True, use_cache=True)
result["sampled_len"] = sampled.shape[1]
result["prompt_len"] = prompt["input_ids"].shape[1]
chat = tokenizer.apply_chat_template(
    [{"role": "user", "content": "What is a closure?"}], add_generation_prompt=True,
    return_tensors="pt")
result["chat_type"] = type(chat).__name__
result["chat_ids"] = chat["input_ids"].tolist()
result["chat_text"] = tokenizer.decode(chat["input_ids"][0])
result["pipeline_text"] = pipe("The integrator", max_new_tokens=20, do_sample=False)[0][
    "generated_text"]
trusted = AutoTokenizer.from_pretrained(path, trust_remote_code=True)
result["trusted_tokenizer_same"] = trusted("The integrator")["input_ids"] == prompt[
    "input_ids"][0].tolist()
result["inl_llm_importable"] = "inl_llm" in sys.modules and sys.modules["inl_llm"] is not None
print("RESULT " + json.dumps(result))
"""


@pytest.fixture(scope="module")
def card_run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    root = tmp_path_factory.mktemp("card")
    folder = root / "inl-tiny"
    args = [
        "--d-model", "32", "--num-layers", "2", "--num-heads", "2", "--num-iterations", "2",
        "--feedforward-dim", "64", "--vocab-size", "512", "--seq-len", "32", "--batch-size", "8",
        "--val-max-tokens", "512", "--steps", "12", "--no-progress", "--device", "cpu",
        "--threads", "1", "--output-dir", str(folder),
    ]  # fmt: skip
    assert main(args) == 0  # the embedded corpus (pydoc_data.topics)
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "HF_HOME": str(root / "hf-home"),
        "HF_MODULES_CACHE": str(root / "hf-modules"),
        "OMP_NUM_THREADS": "1",
    }
    proc = subprocess.run(
        [sys.executable, "-c", _DRIVER, str(folder), ISSUE_USAGE, CARD_USAGE],
        capture_output=True,
        text=True,
        env=env,
        stdin=subprocess.DEVNULL,  # AutoTokenizer without trust_remote_code may ask; answer no
        timeout=300,
        check=False,
        cwd=root,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    assert len(lines) == 1, proc.stdout[-3000:]
    result: dict[str, object] = json.loads(lines[0].removeprefix("RESULT "))
    result["stdout"] = proc.stdout
    return result


def test_the_model_comes_from_the_checkpoint_code(card_run: dict[str, object]) -> None:
    assert card_run["inl_llm_importable"] is False
    module = card_run["model_module"]
    assert isinstance(module, str) and module.startswith("transformers_modules.")
    assert module.endswith(".modeling_inl")
    assert card_run["dtype"] == "torch.bfloat16"


@pytest.mark.parametrize("penalty", ["1.0", "2.0"])
@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_greedy_generation_is_the_same_with_and_without_cache(
    card_run: dict[str, object], dtype: str, penalty: str
) -> None:
    cached, uncached = card_run[f"greedy_{dtype}_{penalty}"]  # type: ignore[misc]
    prompt_len = card_run["prompt_len"]
    assert isinstance(prompt_len, int) and len(cached) == prompt_len + 24
    if penalty == "2.0":  # the comparison has power only if the continuation varies
        assert len(set(cached[prompt_len:])) >= 12
    assert cached == uncached


def test_sampling_generates_new_tokens(card_run: dict[str, object]) -> None:
    prompt_len = card_run["prompt_len"]
    assert isinstance(prompt_len, int)
    assert prompt_len < card_run["sampled_len"] <= prompt_len + 100  # type: ignore[operator]


def test_chat_template_gives_tensors_ending_in_the_assistant_tag(
    card_run: dict[str, object],
) -> None:
    assert card_run["chat_type"] == "BatchEncoding"
    ids = card_run["chat_ids"]
    assert isinstance(ids, list) and len(ids) == 1
    assert ids[0][0] == 1 and ids[0][-1] == 2  # <USER> … <ASSISTANT>
    assert card_run["chat_text"] == "<USER>What is a closure?\n<ASSISTANT>"


def test_pipeline_and_printed_text(card_run: dict[str, object]) -> None:
    text = card_run["pipeline_text"]
    assert isinstance(text, str) and text.startswith("The integrator") and len(text) > 14
    assert card_run["trusted_tokenizer_same"] is True
    stdout = card_run["stdout"]
    assert isinstance(stdout, str) and stdout.count("The integrator") >= 4  # two prints per card
