"""Tests of the bundled corpora (spear_mm/data) and their loader (spear_mm.io.corpora)."""

from __future__ import annotations

import gzip
import hashlib
import importlib.util
import json
import os
import random
import re
import shutil
import struct
import subprocess
import sys
from pathlib import Path

import pytest

from spear_mm.errors import UserError
from spear_mm.io import corpora

REPO = Path(__file__).resolve().parent.parent
DATA = REPO / "spear_mm" / "data"
FINANCE, GENERAL, EXTRA = (
    {"reuters", "gnucash"},
    {"austen", "wordnet"},
    {"gnucash_help", "kmymoney", "ledger"},
)
SPLIT_SOURCES = {
    "finance_train": FINANCE,
    "finance_heldout": FINANCE,
    "general_train": GENERAL,
    "general_heldout": GENERAL,
    "finance_large_train": FINANCE | EXTRA,
    "finance_large_heldout": FINANCE | EXTRA,
}


def _raw_records(name: str) -> list[dict]:
    """Records read straight from the file, strictly as UTF-8 (independent of the loader)."""
    text = gzip.decompress((DATA / f"{name}.jsonl.gz").read_bytes()).decode("utf-8")
    assert text.endswith("\n")
    return [json.loads(line) for line in text.split("\n")[:-1]]


def _provenance_tables() -> tuple[dict, dict]:
    """(split, source) -> (docs, chars) and file -> (bytes, sha256) from PROVENANCE.md."""
    doc = (DATA / "PROVENANCE.md").read_text("utf-8")
    block = doc.split("<!-- BEGIN GENERATED -->")[1].split("<!-- END GENERATED -->")[0]
    counts, files = {}, {}
    for m in re.finditer(r"^\| (\w+) \| (\w+) \| (\d+) \| (\d+) \|$", block, re.M):
        if m[1] in corpora.CORPORA:  # the per-split table, not the before-split one
            counts[(m[1], m[2])] = (int(m[3]), int(m[4]))
    for m in re.finditer(r"^\| ([\w.]+\.jsonl\.gz) \| (\d+) \| ([0-9a-f]{64}) \|$", block, re.M):
        files[m[1]] = (int(m[2]), m[3])
    return counts, files


def _unit(doc_id: str) -> str:
    """The split unit of a record id (story, chapter, chapter, gloss group)."""
    parts = doc_id.split("/")
    return "/".join(parts[:3] if parts[0] == "austen" else parts[:2])


def test_corpus_names_and_paths():
    assert corpora.CORPORA == (
        "finance_train",
        "finance_heldout",
        "general_train",
        "general_heldout",
        "finance_large_train",
        "finance_large_heldout",
    )
    assert set(corpora.TRAIN_CORPORA) | set(corpora.HELDOUT_CORPORA) == set(corpora.CORPORA)
    assert not set(corpora.TRAIN_CORPORA) & set(corpora.HELDOUT_CORPORA)
    for name in corpora.CORPORA:
        path = corpora.corpus_path(name)
        assert path.is_file() and path.resolve() == (DATA / f"{name}.jsonl.gz").resolve()


def test_unknown_name_is_user_error_naming_allowed_names():
    for call in (corpora.corpus_path, corpora.load_documents, corpora.load_records):
        with pytest.raises(UserError) as info:
            call("finance_test")
        assert all(name in str(info.value) for name in corpora.CORPORA)


def test_files_match_provenance_hashes():
    _, files = _provenance_tables()
    assert sorted(files) == sorted(f"{n}.jsonl.gz" for n in corpora.CORPORA)
    for fname, (size, sha) in files.items():
        blob = (DATA / fname).read_bytes()
        assert len(blob) == size
        assert hashlib.sha256(blob).hexdigest() == sha
        # gzip header: no file name flag, mtime 0 (a rebuild must give identical bytes).
        assert blob[:4] == b"\x1f\x8b\x08\x00" and struct.unpack("<I", blob[4:8])[0] == 0


def test_counts_and_characters_match_provenance():
    counts, _ = _provenance_tables()
    seen = {}
    for name in corpora.CORPORA:
        for rec in _raw_records(name):
            docs, chars = seen.get((name, rec["source"]), (0, 0))
            seen[(name, rec["source"])] = (docs + 1, chars + len(rec["text"]))
    assert seen == counts
    for name in corpora.CORPORA:
        assert {src for split, src in seen if split == name} == SPLIT_SOURCES[name]


def test_records_are_valid_and_loader_agrees():
    all_ids = set()
    for name in corpora.CORPORA:
        raw = _raw_records(name)
        assert corpora.load_records(name) == raw
        assert corpora.load_documents(name) == [r["text"] for r in raw]
        for rec in raw:
            assert set(rec) == {"text", "source", "id"}
            assert rec["text"].strip() == rec["text"] and rec["text"]
            assert rec["id"].startswith(rec["source"] + "/")
            assert "\x00" not in rec["text"] and "\ufffd" not in rec["text"]
        ids = {r["id"] for r in raw}
        assert len(ids) == len(raw)
        if name not in ("finance_large_train", "finance_large_heldout"):  # supersets (below)
            assert not ids & all_ids
            all_ids |= ids


def _added_manuals(small_name: str, large_name: str) -> tuple[list[dict], list[dict]]:
    """(records of `small_name`, records `large_name` adds): every small record is kept
    unchanged, and the added ones come from the manuals only."""
    small = {r["id"]: r for r in _raw_records(small_name)}
    large = {r["id"]: r for r in _raw_records(large_name)}
    assert {k: large[k] for k in small} == small
    added = [r for k, r in large.items() if k not in small]
    assert {r["source"] for r in added} == EXTRA
    return list(small.values()), added


def test_finance_large_train_is_finance_train_plus_train_only_manuals():
    small, added = _added_manuals("finance_train", "finance_large_train")
    chars = {src: sum(len(r["text"]) for r in added if r["source"] == src) for src in EXTRA}
    assert all(c > 100_000 for c in chars.values()), chars
    assert sum(chars.values()) > 1.3 * sum(len(r["text"]) for r in small)  # ~2.4x the text

    # No 40-character shingle of an added document in any held-out text (plain string slicing,
    # independent of the numpy hashing the build script borrows from spear_mm.io.roles).
    def shingles(text: str) -> set[str]:
        norm = " ".join(text.split()).lower()
        return {norm[i : i + 40] for i in range(max(1, len(norm) - 39))}

    held = set().union(
        *(shingles(r["text"]) for n in corpora.HELDOUT_CORPORA for r in _raw_records(n))
    )
    for rec in added:
        assert not shingles(rec["text"]) & held, rec["id"]


def test_finance_large_heldout_is_finance_heldout_plus_whole_manual_chapters():
    _, added = _added_manuals("finance_heldout", "finance_large_heldout")
    train = [r for r in _raw_records("finance_large_train") if r["source"] in EXTRA]
    # Whole chapters: no chapter of a manual is on both sides.
    assert not {_unit(r["id"]) for r in added} & {_unit(r["id"]) for r in train}
    for src in EXTRA:  # about a fifth of each manual (whole chapters overshoot the budget)
        held = sum(len(r["text"]) for r in added if r["source"] == src)
        kept = sum(len(r["text"]) for r in train if r["source"] == src)
        assert 0.15 < held / (held + kept) < 0.35, (src, held, kept)


def test_source_filter():
    raw = _raw_records("finance_heldout")
    reuters = [r["text"] for r in raw if r["source"] == "reuters"]
    assert reuters and corpora.load_documents("finance_heldout", ["reuters"]) == reuters
    assert corpora.load_documents("finance_heldout", "reuters") == reuters
    both = corpora.load_documents("finance_heldout", ("gnucash", "reuters"))
    assert both == [r["text"] for r in raw]
    with pytest.raises(UserError, match="gnucash, reuters"):
        corpora.load_documents("finance_heldout", ["austen"])
    with pytest.raises(UserError):
        corpora.load_documents("finance_heldout", [])


def test_loader_returns_fresh_copies():
    first = corpora.load_records("general_heldout")
    first[0]["text"] = "changed"
    first.clear()
    again = corpora.load_records("general_heldout")
    assert again and again[0]["text"] != "changed"


@pytest.mark.parametrize("domain", ["finance", "general", "finance_large"])
def test_train_and_heldout_never_overlap(domain):
    held = _raw_records(f"{domain}_heldout")
    train = _raw_records(f"{domain}_train")
    assert not {_unit(r["id"]) for r in held} & {_unit(r["id"]) for r in train}
    all_train = [
        r["text"] for name in corpora.CORPORA if name.endswith("_train") for r in _raw_records(name)
    ]
    joined = "\x00".join(all_train)
    assert not {r["text"] for r in held} & set(all_train)
    rng = random.Random(f"overlap/{domain}")
    checked = 0
    for rec in held:
        text = rec["text"]
        assert text not in joined
        for _ in range(5):
            if len(text) <= 200:
                break
            start = rng.randrange(len(text) - 200)
            assert text[start : start + 200] not in joined, (rec["id"], start)
            checked += 1
    assert checked >= 4 * len(held) // 2


def _load_build_script():
    spec = importlib.util.spec_from_file_location(
        "build_corpora", REPO / "scripts/build_corpora.py"
    )
    module = importlib.util.module_from_spec(spec)
    sys.modules["build_corpora"] = module  # dataclasses needs the module registered
    spec.loader.exec_module(module)
    return module


def test_ledger_manual_parser_keeps_prose_by_chapter_and_section(tmp_path):
    build = _load_build_script()
    long = "A posting moves an amount from one account to another in the journal file."
    page = (
        "<html><head><title>t</title></head><body><h2>Table of Contents</h2><p>x</p>"
        f"<h2>1 Introduction</h2><p>{long}</p><pre>2004/05/01 Checking  $100.00</pre>"
        f"<h3>1.1 Why</h3><p>{long} Again.</p><p>short</p><ul><li>{long} Listed.</li></ul>"
        + "".join(f"<h2>{k} Chapter</h2><p>{long} Ch {k}.</p>" for k in range(2, 15))
        + "</body></html>"
    )
    path = tmp_path / "usr/share/doc/ledger/ledger3.html"
    path.parent.mkdir(parents=True)
    path.write_text(page, "utf-8")
    docs = build.ledger_docs(tmp_path)
    assert [d.id for d in docs][:3] == ["ledger/ch01/s00", "ledger/ch01/s01", "ledger/ch02/s00"]
    assert docs[0].text == long and "2004/05/01" not in "".join(d.text for d in docs)
    assert docs[1].text == f"{long} Again.\n{long} Listed."  # "short" (< 40 chars) dropped
    assert docs[-1].id == f"ledger/ch{build.LEDGER_CHAPTERS:02d}/s00"  # 13 and 14 left out
    assert {d.unit for d in docs[:2]} == {"ledger/ch01"}


def test_kmymoney_handbook_entities_and_sections(tmp_path):
    build = _load_build_script()
    book = tmp_path / "usr/share/doc/HTML/en/kmymoney"
    book.mkdir(parents=True)
    (book / "index.docbook").write_text("<book>&details-loans;</book>", "utf-8")
    (book / "details-loans.docbook").write_text(
        '<?xml version="1.0"?><chapter><title>Loans</title><para>&kmymoney; tracks loans, '
        "&eg; a mortgage, with an amortization schedule.&Jack.H.Ostroff;</para>"
        "<sect1><title>Payments</title><para>Press &Ctrl;+&Enter; to record each loan payment "
        "&amp; its interest.</para></sect1></chapter>",
        "utf-8",
    )
    docs = build.kmymoney_docs(tmp_path)
    assert [d.id for d in docs] == ["kmymoney/details-loans/s00", "kmymoney/details-loans/s01"]
    assert docs[0].text == "KMyMoney tracks loans, e.g. a mortgage, with an amortization schedule."
    assert docs[1].text == "Press Ctrl+Enter to record each loan payment & its interest."


def _xdr(flags: int, *ints: int) -> bytes:
    return struct.pack(f">{1 + len(ints)}i", flags, *ints)


def test_r_unserializer_on_hand_built_stream():
    # R's XDR format, version 3: character vector c(a = "Emma", b = NA, c = "£5") with names.
    build = _load_build_script()

    def charsxp(s: str | None, latin1: bool = False) -> bytes:
        if s is None:
            return _xdr(9, -1)
        raw = s.encode("latin-1" if latin1 else "utf-8")
        levels = (1 << 2) if latin1 else (1 << 3)  # LATIN1_MASK / UTF8_MASK
        return _xdr(9 | (levels << 12), len(raw)) + raw

    header = b"X\n" + struct.pack(">iii", 3, 0x040201, 0x030500) + _xdr(5) + b"UTF-8"
    names_sym = _xdr(1) + charsxp("names")
    body = _xdr(16 | (1 << 9), 3) + charsxp("Emma") + charsxp(None) + charsxp("£5", latin1=True)
    attrs = _xdr(2 | (1 << 10)) + names_sym + _xdr(16, 3)
    attrs += charsxp("a") + charsxp("b") + charsxp("c") + _xdr(254)
    value = build.RUnserializer(header + body + attrs).read()
    assert value == {"a": "Emma", "b": None, "c": "£5"}
    # A plain integer vector and a back-reference to the symbol read first.
    ints = build.RUnserializer(header + _xdr(13, 3, 7, -2, 0)).read()
    assert ints == [7, -2, 0]
    pair = _xdr(2 | (1 << 10)) + names_sym + _xdr(13, 1, 5)
    pair += _xdr(2 | (1 << 10)) + _xdr(255 | (1 << 8)) + _xdr(13, 1, 6) + _xdr(254)
    assert build.RUnserializer(header + pair).read() == [("names", [5]), ("names", [6])]


def test_encode_is_deterministic_and_round_trips():
    build = _load_build_script()
    docs = [build.Doc("Ünïcode “text”\nline 2", "austen", "austen/x/ch01/p00", "u")]
    blob = build.encode(docs)
    assert blob == build.encode(list(docs))
    line = gzip.decompress(blob).decode("utf-8")
    assert json.loads(line) == {"text": docs[0].text, "source": "austen", "id": docs[0].id}


@pytest.mark.slow
@pytest.mark.skipif(
    shutil.which("apt-get") is None
    or shutil.which("dpkg-deb") is None
    or not os.environ.get("SPEAR_MM_NETWORK_TESTS"),
    reason="downloads ~150 MB of Debian packages: set SPEAR_MM_NETWORK_TESTS=1 (needs apt-get)",
)
def test_rebuild_gives_identical_files(tmp_path):
    subprocess.run(
        [sys.executable, str(REPO / "scripts/build_corpora.py"), "--out", str(tmp_path)],
        check=True,
        capture_output=True,
        timeout=600,
    )
    for name in corpora.CORPORA:
        fname = f"{name}.jsonl.gz"
        assert (tmp_path / fname).read_bytes() == (DATA / fname).read_bytes(), fname
