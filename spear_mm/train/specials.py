"""Which tokens open and close a document for continual pretraining, per model family.

The rule (first match wins; `data.bos_token` / `data.eos_token` override either side, and an
empty string means "no such token"):

1. LLaMA-3 family — the vocabulary has `<|begin_of_text|>` and `<|end_of_text|>`: documents are
   `<|begin_of_text|> … <|end_of_text|>`. Base and Instruct tokenizers alike: an Instruct
   tokenizer's `eos_token` is the chat end-of-turn `<|eot_id|>`, which pretraining never used as a
   document separator.
2. GPT-2 style separator — the vocabulary has `<|endoftext|>` (SmolLM/SmolLM2, GPT-2, Qwen,
   StarCoder): no BOS, documents end with `<|endoftext|>`. SmolLM2 base's bos and eos are both this
   token, so this is "its tokenizer's eos"; SmolLM2-Instruct's `eos_token` is `<|im_end|>`, the
   chat end-of-turn, and is not used.
3. Otherwise the tokenizer's own `bos_token` / `eos_token` (LLaMA-2, Mistral: `<s> … </s>`),
   each only when defined.

A document must end with some token (the packed stream needs a boundary): no EOS at all is a
`UserError` naming `data.eos_token`.
"""

from __future__ import annotations

from dataclasses import dataclass

from spear_mm.errors import UserError


@dataclass(frozen=True)
class DocumentSpecials:
    """Token ids that wrap each document (None = not used) and the id used for padding."""

    bos: int | None
    eos: int
    pad: int
    rule: str


def _token_id(vocab: dict[str, int], token: str, key: str) -> int:
    if token not in vocab:
        raise UserError(
            f"{key} in train config: token {token!r} is not in the tokenizer's "
            f"vocabulary; set {key} to a token the model knows, or '' for none"
        )
    return vocab[token]


def _family_default(tokenizer, vocab: dict[str, int]) -> tuple[int | None, int | None, str]:
    if "<|begin_of_text|>" in vocab and "<|end_of_text|>" in vocab:
        return vocab["<|begin_of_text|>"], vocab["<|end_of_text|>"], "llama3"
    if "<|endoftext|>" in vocab:
        return None, vocab["<|endoftext|>"], "endoftext"
    return tokenizer.bos_token_id, tokenizer.eos_token_id, "tokenizer"


def document_specials(
    tokenizer, bos_token: str | None = None, eos_token: str | None = None
) -> DocumentSpecials:
    """Apply the module's rule to a Hugging Face tokenizer (overrides: None = keep the rule)."""
    vocab = tokenizer.get_vocab()
    bos, eos, rule = _family_default(tokenizer, vocab)
    if bos_token is not None:
        bos = _token_id(vocab, bos_token, "data.bos_token") if bos_token else None
        rule += "+bos_override"
    if eos_token is not None:
        eos = _token_id(vocab, eos_token, "data.eos_token") if eos_token else None
        rule += "+eos_override"
    if eos is None:
        raise UserError(
            "data.eos_token in train config: the tokenizer defines no end-of-document "
            "token; set data.eos_token to one of its tokens"
        )
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos
    return DocumentSpecials(bos=bos, eos=eos, pad=pad, rule=rule)


def document_start(tokenizer) -> int:
    """The token a document's first token follows in training, with the family rule above.

    Packed training streams are `[BOS] doc [EOS] [BOS] doc [EOS] …`: a document's first token is
    predicted after its BOS where the rule has one, else after the previous document's EOS. The
    probes predict each text's first token from this same token, so a bits-per-byte number and
    the training loss read a document the same way (SmolLM2-Instruct's tokenizer BOS is the chat
    marker `<|im_start|>`, which CPT documents never follow). Config overrides
    (`data.bos_token`, `data.eos_token`) are not seen here: they change training only.
    """
    specials = document_specials(tokenizer)
    return specials.bos if specials.bos is not None else specials.eos
