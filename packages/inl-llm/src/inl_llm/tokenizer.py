"""A byte-level BPE tokenizer for INL language models, trained with the ``tokenizers`` library.

:func:`train_tokenizer` learns a GPT-2-style byte-level BPE vocabulary from any text and wraps it
in a :class:`transformers.PreTrainedTokenizerFast` whose ``save_pretrained`` files load back with
``AutoTokenizer.from_pretrained(folder)`` offline (no ``trust_remote_code``).

Choices (and why):

* **Every string round-trips.** The ByteLevel pre-tokenizer maps each UTF-8 byte to one of 256
  printable symbols and all 256 are in the initial alphabet, so no input ever needs an unknown
  token and ``decode(encode(text)) == text`` for any text.
* **Special tokens**, in this id order: ``<|endoftext|>`` (0), ``<USER>`` (1), ``<ASSISTANT>`` (2),
  ``<SYSTEM>`` (3), ``<ERROR>`` (4). ``<|endoftext|>`` is the bos, eos, pad *and* unk token, as in
  GPT-2 and in the original INL checkpoint (id 50256 for bos/eos/pad there): training packs
  contiguous text with no padding, generation passes an attention mask, and an unknown token
  cannot occur in byte-level BPE. Code that builds supervised batches should mask padding through
  the attention mask (as :func:`inl_llm.data.causal_lm_collator` does with ``-100`` labels), not
  by comparing ids to ``pad_token_id``, since that id is also the end of every assistant turn.
* **No BOS is added when encoding** (GPT-2 convention): ``tokenizer("The integrator")`` returns
  exactly the tokens of the text, so encoding a corpus piecewise equals encoding it at once, and a
  prompt continues text the way the model saw it in training windows (random contiguous slices of
  the corpus, which rarely start at a document boundary).
* **Chat template** (Jinja, stored in the saved tokenizer files): each message is its role tag
  followed by its content; ``system``, ``user`` and ``error`` messages end with a newline,
  ``assistant`` messages end with ``<|endoftext|>`` so ``generate`` stops at the end of a reply.
  ``add_generation_prompt=True`` appends ``<ASSISTANT>``. An unknown role raises an error.
* ``model_input_names`` is ``["input_ids", "attention_mask"]``: no ``token_type_ids``, which a
  causal LM's ``generate(**inputs)`` would reject.
"""

from collections.abc import Iterable, Iterator

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import PreTrainedTokenizerFast

__all__ = [
    "ASSISTANT_TOKEN",
    "CHAT_TEMPLATE",
    "ENDOFTEXT_TOKEN",
    "ERROR_TOKEN",
    "SPECIAL_TOKENS",
    "SYSTEM_TOKEN",
    "USER_TOKEN",
    "train_tokenizer",
]

ENDOFTEXT_TOKEN = "<|endoftext|>"
USER_TOKEN = "<USER>"
ASSISTANT_TOKEN = "<ASSISTANT>"
SYSTEM_TOKEN = "<SYSTEM>"
ERROR_TOKEN = "<ERROR>"
#: The special tokens in id order: ``<|endoftext|>`` is id 0, the chat tags ids 1–4.
SPECIAL_TOKENS: tuple[str, ...] = (
    ENDOFTEXT_TOKEN,
    USER_TOKEN,
    ASSISTANT_TOKEN,
    SYSTEM_TOKEN,
    ERROR_TOKEN,
)

#: The chat template: ``<SYSTEM>…\n``, ``<USER>…\n``, ``<ERROR>…\n``, ``<ASSISTANT>…<|endoftext|>``;
#: ``add_generation_prompt`` appends ``<ASSISTANT>``.
CHAT_TEMPLATE = (
    "{%- for message in messages -%}"
    "{%- if message['role'] == 'system' -%}"
    "{{ '" + SYSTEM_TOKEN + "' + message['content'] + '\\n' }}"
    "{%- elif message['role'] == 'user' -%}"
    "{{ '" + USER_TOKEN + "' + message['content'] + '\\n' }}"
    "{%- elif message['role'] == 'assistant' -%}"
    "{{ '" + ASSISTANT_TOKEN + "' + message['content'] + eos_token }}"
    "{%- elif message['role'] == 'error' -%}"
    "{{ '" + ERROR_TOKEN + "' + message['content'] + '\\n' }}"
    "{%- else -%}"
    "{{ raise_exception('chat template: role must be system, user, assistant or error, got '"
    " + message['role']) }}"
    "{%- endif -%}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{ '" + ASSISTANT_TOKEN + "' }}{%- endif -%}"
)

_BYTE_ALPHABET_SIZE = 256


def train_tokenizer(
    texts: str | Iterable[str],
    vocab_size: int = 4096,
    *,
    min_frequency: int = 2,
    model_max_length: int = 2048,
) -> PreTrainedTokenizerFast:
    """Train a byte-level BPE tokenizer with the special tokens and chat template of INL models.

    Training is deterministic: the same texts and arguments give the same vocabulary and merges.

    Args:
        texts: the training text, as one string or an iterable (or iterator) of strings (documents
            or chunks; BPE merges never cross the ByteLevel pre-tokenizer's word boundaries, so
            how the text is chunked only matters at chunk edges).
        vocab_size: the largest vocabulary (256 byte symbols + 5 special tokens + merges); fewer
            tokens result when the text has fewer pairs occurring ``min_frequency`` times. Must be
            at least 261.
        min_frequency: a pair must occur this often to be merged.
        model_max_length: the tokenizer's ``model_max_length`` (the context the model is meant
            for; only used for truncation warnings).

    Returns:
        A :class:`~transformers.PreTrainedTokenizerFast` with ``<|endoftext|>`` as bos/eos/pad/unk
        (id 0), ``<USER>``, ``<ASSISTANT>``, ``<SYSTEM>``, ``<ERROR>`` (ids 1–4) as extra special
        tokens, no BOS added when encoding, and :data:`CHAT_TEMPLATE` as its chat template.

    Raises:
        ValueError: for a ``vocab_size`` below 261, a ``min_frequency`` below 1, a
            ``model_max_length`` below 1, or texts holding no characters.
        TypeError: when ``texts`` is neither a string nor an iterable of strings.

    Example:
        >>> tok = train_tokenizer(["the integrator neuron layer"] * 20, vocab_size=300)
        >>> tok.decode(tok("the integrator")["input_ids"])
        'the integrator'
    """
    smallest = _BYTE_ALPHABET_SIZE + len(SPECIAL_TOKENS)
    if isinstance(vocab_size, bool) or not isinstance(vocab_size, int) or vocab_size < smallest:
        raise ValueError(
            f"train_tokenizer: vocab_size must be an int >= {smallest} (256 bytes + "
            f"{len(SPECIAL_TOKENS)} special tokens), got {vocab_size!r}"
        )
    if isinstance(min_frequency, bool) or not isinstance(min_frequency, int) or min_frequency < 1:
        raise ValueError(
            f"train_tokenizer: min_frequency must be an int >= 1, got {min_frequency!r}"
        )
    if (
        isinstance(model_max_length, bool)
        or not isinstance(model_max_length, int)
        or model_max_length < 1
    ):
        raise ValueError(
            f"train_tokenizer: model_max_length must be an int >= 1, got {model_max_length!r}"
        )

    counted = _CountingIterator(texts)
    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    backend.decoder = decoders.ByteLevel()
    # trim_offsets=False keeps character offsets exact; nothing (no BOS) is added around a sequence.
    backend.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    backend.train_from_iterator(counted, trainer=trainer)
    if counted.characters == 0:
        raise ValueError("train_tokenizer: texts must hold at least one character, got none")

    return PreTrainedTokenizerFast(  # type: ignore[no-untyped-call]
        tokenizer_object=backend,
        bos_token=ENDOFTEXT_TOKEN,
        eos_token=ENDOFTEXT_TOKEN,
        pad_token=ENDOFTEXT_TOKEN,
        unk_token=ENDOFTEXT_TOKEN,
        extra_special_tokens=list(SPECIAL_TOKENS[1:]),
        chat_template=CHAT_TEMPLATE,
        model_max_length=model_max_length,
        model_input_names=["input_ids", "attention_mask"],
        padding_side="left",
        clean_up_tokenization_spaces=False,
    )


class _CountingIterator(Iterator[str]):
    """Yields the strings of ``texts`` (type-checked) and counts their characters."""

    def __init__(self, texts: str | Iterable[str]) -> None:
        if isinstance(texts, str):
            self._items: Iterator[object] = iter((texts,))
        elif isinstance(texts, Iterable):
            self._items = iter(texts)
        else:
            raise TypeError(
                f"train_tokenizer: texts must be a str or an iterable of str, "
                f"got {type(texts).__name__}"
            )
        self.characters = 0

    def __next__(self) -> str:
        item = next(self._items)
        if not isinstance(item, str):
            raise TypeError(
                f"train_tokenizer: texts must yield str items, got {type(item).__name__}"
            )
        self.characters += len(item)
        return item
