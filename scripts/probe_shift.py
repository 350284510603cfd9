"""Base SmolLM2-135M: the old demo compare probe vs the new one, fp32 (docs/benchmarks.md).

.venv/bin/python scripts/probe_shift.py
(a) old: first 4096 tokens of all held-out text, the tokenizer's BOS (<|im_start|>) as prefix;
(b) the same texts with the training document-start token as prefix (this branch);
(c) new demo compare probe: test-role documents, 256 tokens per document, with its 95% interval."""

import time

import numpy as np
import torch

from spear_mm.eval import probe as P
from spear_mm.eval import stats
from spear_mm.io.sources import load_model

model, tok = load_model("smollm2-135m", dtype=torch.float32)
new_prefix = P._prefix_token
for name in ("general", "finance"):
    t0 = time.time()
    P._prefix_token = lambda t: t.bos_token_id
    a = P.bits_per_byte(model, tok, P.probe_texts(name), max_tokens=4096, seq_len=256)
    P._prefix_token = new_prefix
    b = P.bits_per_byte(model, tok, P.probe_texts(name), max_tokens=4096, seq_len=256)
    c = P.Probe.named(name, role="test", max_tokens=4096, doc_max_tokens=256).score(model, tok)
    counts = stats.draw_counts(len(c.docs.nll), 2000, stats.rng_for(0, name))
    draws = stats.bpb_of(np.array([c.docs.nll]), np.array(c.docs.n_bytes), counts)[:, 0]
    iv = stats.percentile(c.bpb, draws, n=len(c.docs.nll))
    print(
        f"{name}: (a) old {a.bpb:.4f} ({len(a.docs.nll)} docs) (b) new prefix {b.bpb:.4f} "
        f"(c) test role {c.bpb:.4f} [95% CI {iv.lo:.4f}, {iv.hi:.4f}] over {len(c.docs.nll)} docs, "
        f"{c.n_tokens} tokens; {time.time() - t0:.0f} s",
        flush=True,
    )
