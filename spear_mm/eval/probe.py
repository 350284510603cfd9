"""Fast bits-per-byte probes: batched, token-budgeted scoring of a fixed text set.

The windowing is lm-eval's `loglikelihood_rolling` (with `max_length = seq_len`), so a probe and an
lm-eval bits_per_byte task over the same texts give the same number:

- every text is scored on its own, tokenized without special tokens, and its first token is
  predicted from a prefix token (the tokenizer's BOS, else EOS) — no text conditions on another;
- a text of N tokens is cut into windows of `seq_len` predicted tokens; window k > 0 sees only the
  one token before it as context (lm-eval's disjoint windows, `context_len=1`);
- the last window of a text with N > seq_len is a full `seq_len` window that ends at the text's end
  and scores only the tokens not scored yet (the rest of it is context), as lm-eval does.

Token budget: texts are taken in order until `max_tokens` tokens have been scored; the text that
crosses the budget is truncated to the tokens that fit, and its byte count is that of the text up
to the end of the last scored token (from the fast tokenizer's offsets). bits-per-byte is
sum(NLL nats) / (ln 2 * sum(bytes)), bytes counted in UTF-8 — lm-eval's weighted aggregate.

Tokenizers that add a BOS token (LLaMA-3) differ from lm-eval's default there: lm-eval then also
scores "BOS given BOS"; the probe scores text tokens only. Tokenizers that add nothing (SmolLM2,
GPT-2, the test tokenizer) agree exactly.
"""

from __future__ import annotations

import contextlib
import functools
import math
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch

from spear_mm.errors import UserError
from spear_mm.eval.config import PROBE_NAMES  # noqa: F401 (re-exported)


@dataclass(frozen=True)
class DocScores:
    """Per-document records of one probe run, in text order: what any statistic (a bootstrap
    interval, a ratio, a difference between models) is recomputed from without rescoring."""

    ids: tuple[str, ...]
    nll: tuple[float, ...]  # nats, summed over the document's scored tokens
    n_bytes: tuple[int, ...]  # UTF-8 bytes those tokens cover
    n_tokens: tuple[int, ...]

    def record(self) -> dict:
        return {
            "ids": list(self.ids),
            "nll": list(self.nll),
            "bytes": list(self.n_bytes),
            "tokens": list(self.n_tokens),
        }


@dataclass(frozen=True)
class ProbeResult:
    """bits-per-byte and the totals it came from (NLL in nats over `n_tokens` scored tokens),
    with the per-document records (`docs`) they are the sums of."""

    bpb: float
    nll_nats: float
    n_bytes: int
    n_tokens: int
    docs: DocScores | None = None

    def record(self) -> dict:
        out = {"bpb": self.bpb, "nll_nats": self.nll_nats, "n_bytes": self.n_bytes}
        out["n_tokens"] = self.n_tokens
        if self.docs is not None:
            out["docs"] = self.docs.record()
        return out


@dataclass(frozen=True)
class Windows:
    """A tokenized probe: one row per forward pass (what `bits_per_byte` scores)."""

    inputs: tuple[tuple[int, ...], ...]  # model inputs, each <= seq_len tokens
    targets: tuple[tuple[int, ...], ...]  # next tokens, same length as the inputs
    n_score: tuple[int, ...]  # score only the last n_score targets of each row
    n_bytes: int
    n_tokens: int
    row_doc: tuple[int, ...] = ()  # index of the text each row belongs to
    doc_bytes: tuple[int, ...] = ()  # per scored text (texts with no token are left out)
    doc_tokens: tuple[int, ...] = ()
    doc_index: tuple[int, ...] = ()  # position in `texts` of each scored text


def _prefix_token(tokenizer) -> int:
    """The token a document follows in training (spear_mm.train.specials.document_start)."""
    from spear_mm.train.specials import document_start

    return document_start(tokenizer)


def _tokenize(tokenizer, text: str) -> tuple[list[int], list | None]:
    fast = getattr(tokenizer, "is_fast", False)
    enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=fast)
    return list(enc["input_ids"]), (enc["offset_mapping"] if fast else None)


def _encode(tokenizer, text: str, budget: int) -> tuple[list[int], int]:
    """Token ids of `text` (at most `budget`) and the UTF-8 bytes of the text they cover."""
    # A very long text only needs its head tokenized: pre-tokenization is local, so tokens well
    # before the cut are those of the full text. Too few tokens in the head: use the full text.
    head = text[: 64 * (budget + 64)]
    ids, offsets = _tokenize(tokenizer, head)
    if len(head) < len(text) and len(ids) <= budget + 16:
        ids, offsets = _tokenize(tokenizer, text)
    if len(ids) <= budget:  # the whole text is scored
        return ids, len(text.encode("utf-8"))
    ids = ids[:budget]
    if offsets is not None:
        return ids, len(text[: offsets[budget - 1][1]].encode("utf-8"))
    # Slow tokenizers have no offsets: count the bytes of the decoded tokens instead.
    return ids, len(tokenizer.decode(ids).encode("utf-8"))


def _rolling_windows(n: int, seq_len: int) -> list[tuple[int, int, int]]:
    """lm-eval's rolling windows over a text of n tokens as (start, end, n_score).

    Positions index the sequence [prefix] + tokens: a window feeds seq[start:end] and predicts
    tokens[start:end]; only the last n_score predictions count.
    """
    out = [(0, min(seq_len, n), min(seq_len, n))]
    done = out[0][1]
    while done < n:
        take = min(n - done, seq_len)
        end = done + take
        out.append((end - seq_len, end, take))  # full window ending at `end`
        done = end
    return out


def build_windows(
    tokenizer,
    texts: Sequence[str],
    *,
    max_tokens: int = 16384,
    seq_len: int = 256,
    doc_max_tokens: int | None = None,
) -> Windows:
    """Tokenize `texts` in order until `max_tokens` are scored and cut them into windows.

    `doc_max_tokens` caps the tokens scored per text (its head): the same budget then spreads
    over more documents, which is what the bootstrap resamples (more, smaller units → an
    interval that means something; docs/metrics.md). None = no cap.
    """
    if max_tokens < 1 or seq_len < 1:
        raise UserError(f"probe max_tokens={max_tokens}, seq_len={seq_len}: both must be >= 1")
    if doc_max_tokens is not None and doc_max_tokens < 1:
        raise UserError(f"probe doc_max_tokens={doc_max_tokens}: must be >= 1 (or null)")
    cap = doc_max_tokens or max_tokens
    prefix = _prefix_token(tokenizer)
    inputs, targets, n_score, row_doc = [], [], [], []
    doc_bytes, doc_tokens, doc_index = [], [], []
    used = 0
    for index, text in enumerate(texts):
        if used >= max_tokens:
            break
        ids, nb = _encode(tokenizer, text, min(cap, max_tokens - used))
        if not ids:
            continue  # an empty text has nothing to score (lm-eval yields no window either)
        seq = [prefix, *ids]
        for start, end, k in _rolling_windows(len(ids), seq_len):
            inputs.append(tuple(seq[start:end]))
            targets.append(tuple(seq[start + 1 : end + 1]))
            n_score.append(k)
            row_doc.append(len(doc_index))
        used += len(ids)
        doc_bytes.append(nb)
        doc_tokens.append(len(ids))
        doc_index.append(index)
    if used == 0:
        raise UserError("probe texts contain no tokens; give at least one non-empty text")
    return Windows(
        tuple(inputs), tuple(targets), tuple(n_score), sum(doc_bytes), used,
        tuple(row_doc), tuple(doc_bytes), tuple(doc_tokens), tuple(doc_index),
    )  # fmt: skip


def _use_autocast(model: torch.nn.Module, device: torch.device, requested: bool | None) -> bool:
    if requested is False:
        return False
    if requested and device.type == "cpu":
        # A speed setting: ~1.7x on CPUs with native bf16 (AVX512-BF16/AMX), but emulated bf16
        # is far slower than fp32 (a matmul measured ~60x on an AVX2-only EPYC), so it applies
        # only where the CPU has it.
        from spear_mm.train.runtime import cpu_has_bf16

        return cpu_has_bf16() or _warn_emulated_bf16()
    if requested:
        return True
    # Auto: bf16 where it is native and the weights are fp32 — CUDA with bf16 support. On the
    # CPU it stays off (bit-comparable with lm-eval); pass True for ~1.7x on AVX512-BF16 CPUs.
    dtype = next(model.parameters()).dtype
    return device.type == "cuda" and dtype == torch.float32 and torch.cuda.is_bf16_supported()


@functools.lru_cache(maxsize=1)
def _warn_emulated_bf16() -> bool:
    """Say once per process that autocast_bf16=true was set aside; returns False (no autocast)."""
    print(
        "note: autocast_bf16=true applies only on CPUs with native bf16 (AVX512-BF16/AMX); "
        "this one emulates it, so the probes score in fp32",
        file=sys.stderr,
    )
    return False


def score_windows(
    model: torch.nn.Module,
    windows: Windows,
    *,
    batch_size: int = 8,
    autocast_bf16: bool | None = None,
    ids: Sequence[str] | None = None,
) -> ProbeResult:
    """Sum the NLL of the scored tokens of `windows` under `model` (eval mode, no grad).

    Rows are batched longest first (stable sort, so the order is fixed) and right-padded; with a
    causal model the padding never reaches a real position, so no attention mask is needed.
    The model's train/eval mode is restored afterwards. `ids` names the texts the windows were
    built from (default: their positions) in the per-document records.
    """
    if batch_size < 1:
        raise UserError(f"probe batch_size={batch_size}: must be >= 1")
    device = next(model.parameters()).device
    autocast = _use_autocast(model, device, autocast_bf16)
    order = sorted(range(len(windows.inputs)), key=lambda i: -len(windows.inputs[i]))
    per_row = [0.0] * len(order)
    was_training = model.training
    model.eval()
    try:
        for lo in range(0, len(order), batch_size):
            rows = order[lo : lo + batch_size]
            scores = _score_batch(model, windows, rows, device, autocast)
            for i, nll in zip(rows, scores, strict=True):
                per_row[i] = nll
    finally:
        model.train(was_training)
    nll = math.fsum(per_row)
    bpb = nll / (math.log(2) * windows.n_bytes) if windows.n_bytes else math.nan
    return ProbeResult(
        bpb, nll, windows.n_bytes, windows.n_tokens, _doc_scores(windows, per_row, ids)
    )


def _doc_scores(windows: Windows, per_row: list[float], ids) -> DocScores:
    sums: list[list[float]] = [[] for _ in windows.doc_bytes]
    for row, nll in zip(windows.row_doc, per_row, strict=True):
        sums[row].append(nll)
    names = [str(ids[i]) if ids is not None else str(i) for i in windows.doc_index]
    return DocScores(
        tuple(names),
        tuple(math.fsum(s) for s in sums),
        windows.doc_bytes,
        windows.doc_tokens,
    )


def window_batch(windows: Windows, rows: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """(inputs, targets) of `rows`, right-padded; targets are -100 where nothing is scored."""
    width = max(len(windows.inputs[i]) for i in rows)
    x = torch.zeros((len(rows), width), dtype=torch.long)
    y = torch.full((len(rows), width), -100, dtype=torch.long)  # -100: not scored
    for b, i in enumerate(rows):
        n, k = len(windows.inputs[i]), windows.n_score[i]
        x[b, :n] = torch.tensor(windows.inputs[i])
        y[b, n - k : n] = torch.tensor(windows.targets[i][n - k :])
    return x, y


def use_autocast(model: torch.nn.Module, autocast_bf16: bool | None) -> bool:
    """Whether scoring `model` runs in bf16 autocast (the probes' rule, see `score_windows`)."""
    return _use_autocast(model, next(model.parameters()).device, autocast_bf16)


@torch.no_grad()
def _score_batch(model, windows: Windows, rows: list[int], device, autocast: bool) -> list[float]:
    x, y = window_batch(windows, rows)
    x, y, width = x.to(device), y.to(device), x.shape[1]
    ctx = (
        torch.autocast(device_type=device.type, dtype=torch.bfloat16)
        if autocast
        else contextlib.nullcontext()
    )
    with ctx:
        logits = model(input_ids=x).logits
    # Softmax over the last (contiguous) dim: over a strided dim (`transpose(1, 2)`) the CPU
    # kernel is measurably less accurate with large vocabularies (~3e-6 relative at 49k).
    vocab = logits.shape[-1]
    nll = torch.nn.functional.cross_entropy(
        logits.float().reshape(-1, vocab), y.reshape(-1), ignore_index=-100, reduction="none"
    )
    return nll.double().view(len(rows), width).sum(dim=1).tolist()


def bits_per_byte(
    model: torch.nn.Module,
    tokenizer,
    texts: Sequence[str],
    *,
    max_tokens: int = 16384,
    seq_len: int = 256,
    batch_size: int = 8,
    autocast_bf16: bool | None = None,
) -> ProbeResult:
    """bits-per-byte of `model` on the first `max_tokens` tokens of `texts` (see module doc).

    Deterministic: the same model, tokenizer and texts give the same windows and batches.
    `autocast_bf16=None` turns bf16 autocast on only on CUDA with fp32 weights.
    """
    windows = build_windows(tokenizer, texts, max_tokens=max_tokens, seq_len=seq_len)
    return score_windows(model, windows, batch_size=batch_size, autocast_bf16=autocast_bf16)


def _fields(record) -> tuple[str, str, str | None]:
    if isinstance(record, str):
        return record, "", None
    if isinstance(record, dict):
        rid = record.get("id")
        return record["text"], str(record.get("source", "")), None if rid is None else str(rid)
    rid = getattr(record, "id", None)
    return record.text, str(getattr(record, "source", "")), None if rid is None else str(rid)


def interleave_records(records: Sequence) -> list:
    """`records` taken round-robin over their `source` (first-appearance order).

    A token-budgeted probe reads texts in order; interleaving makes a small budget cover every
    source (e.g. WordNet glosses *and* Austen) instead of the first one only. Plain strings have
    no source and keep their order.
    """
    queues: dict[str, list] = {}
    for rec in records:
        queues.setdefault(_fields(rec)[1], []).append(rec)
    out: list = []
    lists = list(queues.values())
    for i in range(max((len(q) for q in lists), default=0)):
        out.extend(q[i] for q in lists if i < len(q))
    return out


def interleave_by_source(records: Sequence) -> list[str]:
    """Texts of `interleave_records(records)`."""
    return [_fields(r)[0] for r in interleave_records(records)]


def _split(name: str, heldout):
    """(records, RoleSplit) of probe `name`'s held-out corpus (None: the bundled corpora)."""
    from spear_mm.eval.config import HeldoutConfig
    from spear_mm.io import roles

    heldout = heldout or HeldoutConfig()
    return roles.heldout_split(heldout.corpus(name), heldout.exclude, key=f"heldout.{name}")


def probe_records(name: str, role: str | None = None, heldout=None) -> list[dict]:
    """The held-out records of probe `name` (`general` or `finance`), source-interleaved.

    `heldout` (eval.config.HeldoutConfig; None = the bundled corpora) says which text the probe
    reads. `role` (calibration | selection | test, see spear_mm.io.roles) keeps that role's
    documents; None keeps every held-out document, including those the role split excludes.
    """
    from spear_mm.io import roles

    records, split = _split(name, heldout)
    if role is not None:
        records = roles.role_records(records, split, role)
    return interleave_records(records)


def role_records(heldout=None) -> dict:
    """{probe: its held-out corpus's role split record (document ids per role)}: written beside
    numbers so a reader can see which documents each role held."""
    return {name: _split(name, heldout)[1].record() for name in PROBE_NAMES}


def probe_texts(name: str, role: str | None = None, heldout=None) -> list[str]:
    """Texts of `probe_records(name, role, heldout)`."""
    return [r["text"] for r in probe_records(name, role, heldout)]


@dataclass(frozen=True)
class Probe:
    """A named probe: its texts and settings, with the tokenized windows cached per tokenizer.

    Build with `Probe.named("general", role="test", max_tokens=8192)` or
    `Probe("mine", texts=(...), ids=(...))`. Scoring the same probe many times (ablations,
    sweeps) tokenizes once per tokenizer object. `ids` name the texts in the per-document
    records (default: their positions); `role` is recorded with them.
    """

    name: str
    texts: tuple[str, ...]
    max_tokens: int = 16384
    seq_len: int = 256
    batch_size: int = 8
    autocast_bf16: bool | None = None
    doc_max_tokens: int | None = None
    ids: tuple[str, ...] = ()
    role: str | None = None
    _cache: dict = field(default_factory=dict, repr=False, compare=False, hash=False)

    @classmethod
    def named(cls, name: str, role: str | None = None, heldout=None, **settings) -> Probe:
        """Probe `name` on its `role` documents of `heldout` (None: the bundled corpora)."""
        records = probe_records(name, role, heldout)
        texts = tuple(r["text"] for r in records)
        return cls(
            name=name, texts=texts, ids=tuple(r["id"] for r in records), role=role, **settings
        )

    @classmethod
    def from_records(cls, name: str, records: Sequence, role: str | None = None, **settings):
        """A probe over records (dicts with `text`, optional `id`, `source`), source-interleaved."""
        rows = [_fields(r) for r in interleave_records(records)]
        ids = tuple(rid if rid is not None else str(i) for i, (_, _, rid) in enumerate(rows))
        return cls(name=name, texts=tuple(t for t, _, _ in rows), ids=ids, role=role, **settings)

    def windows(self, tokenizer) -> Windows:
        hit = self._cache.get(id(tokenizer))
        if hit is None or hit[0] is not tokenizer:
            win = build_windows(
                tokenizer,
                self.texts,
                max_tokens=self.max_tokens,
                seq_len=self.seq_len,
                doc_max_tokens=self.doc_max_tokens,
            )
            hit = (tokenizer, win)  # keep the tokenizer alive so its id stays unique
            self._cache[id(tokenizer)] = hit
        return hit[1]

    def score(self, model: torch.nn.Module, tokenizer) -> ProbeResult:
        return score_windows(
            model,
            self.windows(tokenizer),
            batch_size=self.batch_size,
            autocast_bf16=self.autocast_bf16,
            ids=self.ids or None,
        )

    def documents(self, tokenizer) -> dict:
        """Settings plus the ids / bytes / tokens of the documents this probe scores (the budget
        may stop inside the last one): what its per-document NLL records are bootstrapped with."""
        win = self.windows(tokenizer)
        return {
            **self.settings(),
            "ids": [self.ids[i] if self.ids else str(i) for i in win.doc_index],
            "bytes": list(win.doc_bytes),
            "tokens": list(win.doc_tokens),
        }

    def settings(self) -> dict:
        """What defines this probe's numbers, for the records written beside them."""
        return {
            "name": self.name,
            "role": self.role,
            "max_tokens": self.max_tokens,
            "seq_len": self.seq_len,
            "doc_max_tokens": self.doc_max_tokens,
            "n_texts": len(self.texts),
        }
