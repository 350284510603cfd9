"""Streaming checkpoint I/O over Hugging Face safetensors folders.

`CheckpointReader` reads single-file (`model.safetensors`) and sharded (`*.index.json`) folders
without loading a model: one `safe_open` handle per shard, opened once and kept, tensors read on
demand. `ShardedWriter` writes the Hugging Face layout atomically (temp folder + rename), on a
background thread, one shard in flight while the next fills, so memory stays bounded by about
two shards.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from spear_mm.errors import UserError
from spear_mm.io.atomic import atomic_dir
from spear_mm.io.direct import ST_DTYPES, BufferPool, TensorFile, nbytes_of

SINGLE_FILE = "model.safetensors"
INDEX_FILE = "model.safetensors.index.json"
PICKLE_FILES = ("pytorch_model.bin", "model.pt", "pytorch_model.pt")
PICKLE_INDEX = "pytorch_model.bin.index.json"
TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "tokenizer.model",
    "vocab.json",
    "merges.txt",
)
# Files copied verbatim from the source model folder next to the written weights.
AUX_FILES = (
    *TOKENIZER_FILES,
    "added_tokens.json",
    "generation_config.json",
    "chat_template.jinja",
    "chat_template.json",
)

DTYPES = {
    "float32": torch.float32,
    "fp32": torch.float32,
    "bfloat16": torch.bfloat16,
    "bf16": torch.bfloat16,
    "float16": torch.float16,
    "fp16": torch.float16,
}


def parse_dtype(name: str | torch.dtype | None, where: str = "dtype") -> torch.dtype | None:
    """Map a dtype name (`bfloat16`, `bf16`, `float32`, ...) to a torch dtype."""
    if name is None or isinstance(name, torch.dtype):
        return name
    try:
        return DTYPES[str(name).lower()]
    except KeyError:
        allowed = ", ".join(sorted(DTYPES))
        raise UserError(f"unknown {where} '{name}'; allowed: {allowed}") from None


def dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def _safe_member(folder: Path, name: str, what: str) -> Path:
    """A file named by an index must be a plain file name inside `folder` (no path escapes)."""
    if not name or "/" in name or "\\" in name or name in (".", "..") or name.startswith(".."):
        raise UserError(f"{what} '{name}' in {folder} is not a plain file name inside the folder")
    return folder / name


class CheckpointReader:
    """Read tensors from a model folder, shard by shard, without loading the whole model.

    Pickle checkpoints (`.bin`, `.pt`) are refused unless `allow_pickle`; then they load with
    `torch.load(weights_only=True)` (no code runs) and are held in memory.
    """

    def __init__(self, folder: str | os.PathLike, allow_pickle: bool = False):
        self.folder = Path(folder)
        if not self.folder.is_dir():
            raise UserError(f"model folder {self.folder} does not exist or is not a folder")
        self.config = self._read_config()
        self._handles: dict[str, object] = {}
        self._files: dict[str, TensorFile] = {}
        self._pickled: dict[str, torch.Tensor] | None = None
        self._shard_of: dict[str, str] = {}
        self._load_layout(allow_pickle)
        self.shards: list[str] = list(dict.fromkeys(self._shard_of.values()))
        by_shard: dict[str, list[str]] = {s: [] for s in self.shards}
        for name, shard in self._shard_of.items():
            by_shard[shard].append(name)
        self._by_shard = by_shard
        self.names: list[str] = [n for s in self.shards for n in by_shard[s]]

    # -- layout ---------------------------------------------------------------------------
    def _read_config(self) -> dict:
        path = self.folder / "config.json"
        if not path.is_file():
            raise UserError(
                f"{self.folder} has no config.json; it is not a Hugging Face model folder"
            )
        try:
            return json.loads(path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise UserError(f"config.json in {self.folder} is not valid JSON: {exc}") from None

    def _load_layout(self, allow_pickle: bool) -> None:
        index = self.folder / INDEX_FILE
        if index.is_file():
            try:
                weight_map = json.loads(index.read_text(encoding="utf-8"))["weight_map"]
            except (json.JSONDecodeError, KeyError, TypeError) as exc:
                raise UserError(f"{index} is not a valid safetensors index ({exc})") from None
            for shard in sorted(set(weight_map.values())):
                if not _safe_member(self.folder, shard, "shard").is_file():
                    raise UserError(f"shard {shard} named by {index} is missing")
            for shard in sorted(set(weight_map.values())):
                for name in self._open(shard).keys():  # noqa: SIM118 - safe_open handle
                    if weight_map.get(name) == shard:
                        self._shard_of[name] = shard
            missing = set(weight_map) - set(self._shard_of)
            if missing:
                first = sorted(missing)[0]
                raise UserError(f"tensor {first} is listed in {index} but not in its shard")
            return
        if (self.folder / SINGLE_FILE).is_file():
            for name in self._open(SINGLE_FILE).keys():  # noqa: SIM118
                self._shard_of[name] = SINGLE_FILE
            return
        pickles = [f for f in PICKLE_FILES if (self.folder / f).is_file()]
        if pickles or (self.folder / PICKLE_INDEX).is_file():
            if not allow_pickle:
                raise UserError(
                    f"{self.folder} holds a pickle checkpoint ({(pickles or [PICKLE_INDEX])[0]}), "
                    "which can run code when loaded; convert it to safetensors or pass "
                    "--allow-pickle (allow_pickle=true) to load it with weights_only=True"
                )
            self._load_pickle(self.folder / pickles[0])
            return
        raise UserError(f"{self.folder} has no model.safetensors or {INDEX_FILE}")

    def _load_pickle(self, path: Path) -> None:
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:  # noqa: BLE001 - any unpickling failure is bad input
            raise UserError(
                f"cannot load pickle checkpoint {path} with weights_only=True: {exc}"
            ) from None
        self._pickled = {k: v for k, v in state.items() if isinstance(v, torch.Tensor)}
        self._shard_of = {k: path.name for k in self._pickled}

    def _open(self, shard: str):
        handle = self._handles.get(shard)
        if handle is None:
            path = _safe_member(self.folder, shard, "shard")
            try:
                handle = safe_open(str(path), framework="pt", device="cpu")
            except (SafetensorError, OSError, ValueError) as exc:
                raise UserError(f"corrupt or truncated safetensors file {path}: {exc}") from None
            self._handles[shard] = handle
        return handle

    # -- access ---------------------------------------------------------------------------
    def __contains__(self, name: str) -> bool:
        return name in self._shard_of

    def __len__(self) -> int:
        return len(self.names)

    def shard_of(self, name: str) -> str:
        return self._shard_of[name]

    def names_in(self, shard: str) -> list[str]:
        return list(self._by_shard[shard])

    def get(self, name: str) -> torch.Tensor:
        if name not in self._shard_of:
            raise UserError(f"tensor {name} not found in {self.folder}")
        if self._pickled is not None:
            return self._pickled[name]
        shard = self._shard_of[name]
        try:
            return self._open(shard).get_tensor(name)
        except (SafetensorError, OSError, ValueError) as exc:
            raise UserError(
                f"cannot read tensor {name} from {self.folder / shard}: {exc}"
            ) from None

    def read(self, name: str, pool: BufferPool | None = None) -> torch.Tensor:
        """Like `get`, but into memory the caller owns (a buffer from `pool` when given): one
        positioned read, no memory map, so a streaming job's resident memory is only the tensors
        it holds (io.direct says why). Each shard's file stays open until `release`/`close`,
        never reopened per tensor. Pickle checkpoints return their in-memory tensor."""
        if name not in self._shard_of:
            raise UserError(f"tensor {name} not found in {self.folder}")
        if self._pickled is not None:
            return self._pickled[name]
        return self.tensor_file(name).read(name, pool)

    def tensor_file(self, name: str) -> TensorFile | None:
        """The open shard file holding `name` (opened on first use, kept until `release`), for
        reads of byte ranges (`TensorFile.map`); None for a pickle checkpoint."""
        if self._pickled is not None:
            return None
        shard = self._shard_of[name]
        f = self._files.get(shard)
        if f is None:
            f = self._files[shard] = TensorFile(_safe_member(self.folder, shard, "shard"))
        return f

    def meta(self, name: str) -> tuple[torch.dtype, tuple[int, ...]]:
        """(dtype, shape) without reading the data."""
        if self._pickled is not None:
            t = self._pickled[name]
            return t.dtype, tuple(t.shape)
        sl = self._open(self._shard_of[name]).get_slice(name)
        return ST_DTYPES[sl.get_dtype()], tuple(sl.get_shape())

    def nbytes(self, name: str) -> int:
        return nbytes_of(*self.meta(name))

    def iter_shard(self, shard: str) -> Iterator[tuple[str, torch.Tensor]]:
        for name in self._by_shard[shard]:
            yield name, self.get(name)

    def iter_tensors(self) -> Iterator[tuple[str, torch.Tensor]]:
        """All tensors, shard by shard, in file order."""
        for shard in self.shards:
            yield from self.iter_shard(shard)

    def state_dict(self) -> dict[str, torch.Tensor]:
        return dict(self.iter_tensors())

    def release(self, shard: str) -> None:
        """Drop a shard's handle once it has been read (its memory map goes with the last tensor
        that views it). A later `get` from that shard reopens it."""
        self._handles.pop(shard, None)
        f = self._files.pop(shard, None)
        if f is not None:
            f.close()

    def close(self) -> None:
        self._handles.clear()
        for f in self._files.values():
            f.close()
        self._files.clear()

    def __enter__(self) -> CheckpointReader:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def parse_size(size: str | int | float) -> int:
    """'500MB', '5GB', '2GiB' or a number of bytes → bytes."""
    if isinstance(size, (int, float)):
        return int(size)
    text = str(size).strip().upper().replace(" ", "")
    units = {
        "KIB": 2**10,
        "MIB": 2**20,
        "GIB": 2**30,
        "KB": 10**3,
        "MB": 10**6,
        "GB": 10**9,
        "K": 10**3,
        "M": 10**6,
        "G": 10**9,
        "B": 1,
    }
    for unit, mult in units.items():
        if text.endswith(unit):
            number = text[: -len(unit)]
            break
    else:
        number, mult = text, 1
    try:
        value = float(number)
    except ValueError:
        raise UserError(f"shard size '{size}' is not a size like 500MB or 5GB") from None
    if value <= 0:
        raise UserError(f"shard size '{size}' must be positive")
    return int(value * mult)


class ShardedWriter:
    """Write tensors into a Hugging Face model folder, atomically and shard by shard.

    Tensors are added in order; a shard is closed when the next tensor would push it past
    `max_shard_bytes` (a tensor larger than the limit gets a shard of its own) and written on a
    background thread. On `close()` shards are named `model-0000k-of-0000N.safetensors` with an
    index (or `model.safetensors` when there is one shard), `config.json` is copied from
    `source_dir` verbatim except for the dtype field (set to the dtype the weights were stored in), tokenizer / generation / chat-template files
    are copied, and the temp folder is renamed to `out_dir`. Leaving the `with` block on an
    exception removes everything written.
    """

    def __init__(
        self,
        out_dir: str | os.PathLike,
        *,
        source_dir: str | os.PathLike | None = None,
        max_shard_bytes: int | str = 5 * 10**9,
        dtype: torch.dtype | str | None = None,
        force: bool = False,
        config: dict | None = None,
    ):
        self.out_dir = Path(out_dir)
        self.source_dir = Path(source_dir) if source_dir else None
        self.max_shard_bytes = parse_size(max_shard_bytes)
        self.dtype = parse_dtype(dtype)
        self._config = config
        self._ctx = atomic_dir(self.out_dir, force=force)
        self.tmp = self._ctx.__enter__()
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="shard-writer")
        self._pending: Future | None = None
        self._current: dict[str, torch.Tensor] = {}
        self._current_bytes = 0
        self._shards: list[tuple[str, list[str], int]] = []  # (temp name, names, bytes)
        self._float_dtypes: set[torch.dtype] = set()  # what the weights are stored in
        self._closed = False

    def add(self, name: str, tensor: torch.Tensor) -> None:
        if self.dtype is not None and tensor.is_floating_point():
            tensor = tensor.to(self.dtype)
        if tensor.is_floating_point():
            self._float_dtypes.add(tensor.dtype)
        tensor = tensor.detach().to("cpu").contiguous()
        size = tensor.numel() * tensor.element_size()
        if self._current and self._current_bytes + size > self.max_shard_bytes:
            self._flush()
        self._current[name] = tensor
        self._current_bytes += size

    def write_json(self, name: str, obj) -> None:
        """Write an extra JSON file (e.g. a merge report) into the output folder."""
        (self.tmp / name).write_text(json.dumps(obj, indent=2, sort_keys=False) + "\n")

    def _flush(self) -> None:
        if not self._current:
            return
        if self._pending is not None:
            self._pending.result()  # at most one shard in flight: bounded memory
        tmp_name = f"shard-{len(self._shards):05d}.safetensors"
        tensors, self._current = self._current, {}
        self._shards.append((tmp_name, list(tensors), self._current_bytes))
        self._current_bytes = 0
        path = str(self.tmp / tmp_name)
        self._pending = self._pool.submit(save_file, tensors, path, {"format": "pt"})

    def close(self) -> Path:
        if self._closed:
            return self.out_dir
        try:
            self._flush()
            if self._pending is not None:
                self._pending.result()
            self._pool.shutdown(wait=True)
            self._finish_layout()
            self._copy_aux()
        except BaseException as exc:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._ctx.__exit__(type(exc), exc, exc.__traceback__)
            self._closed = True
            raise
        self._ctx.__exit__(None, None, None)
        self._closed = True
        return self.out_dir

    def abort(self) -> None:
        if self._closed:
            return
        self._pool.shutdown(wait=True, cancel_futures=True)
        err = RuntimeError("aborted")
        try:
            self._ctx.__exit__(RuntimeError, err, None)
        except RuntimeError:
            pass
        self._closed = True

    def _finish_layout(self) -> None:
        n = len(self._shards)
        if n == 1:
            os.replace(self.tmp / self._shards[0][0], self.tmp / SINGLE_FILE)
            return
        weight_map: dict[str, str] = {}
        total = 0
        for k, (tmp_name, names, nbytes) in enumerate(self._shards, start=1):
            final = f"model-{k:05d}-of-{n:05d}.safetensors"
            os.replace(self.tmp / tmp_name, self.tmp / final)
            weight_map.update({name: final for name in names})
            total += nbytes
        index = {"metadata": {"total_size": total}, "weight_map": dict(sorted(weight_map.items()))}
        (self.tmp / INDEX_FILE).write_text(json.dumps(index, indent=2) + "\n")

    def _copy_aux(self) -> None:
        config = self._config
        src_config = self.source_dir / "config.json" if self.source_dir else None
        if config is None and src_config is not None and src_config.is_file():
            config = json.loads(src_config.read_text(encoding="utf-8"))
            if self._stated_dtype(config) == self._stored_dtype():
                shutil.copyfile(src_config, self.tmp / "config.json")  # byte for byte
                config = None
        if config is not None:
            (self.tmp / "config.json").write_text(self._config_text(config))
        if self.source_dir:
            for name in AUX_FILES:
                src = self.source_dir / name
                if src.is_file():
                    shutil.copyfile(src, self.tmp / name)

    def _stored_dtype(self) -> str | None:
        """The dtype the floating weights were written in (None when mixed or none)."""
        if self.dtype is not None:
            return dtype_name(self.dtype)
        return dtype_name(next(iter(self._float_dtypes))) if len(self._float_dtypes) == 1 else None

    @staticmethod
    def _stated_dtype(config: dict) -> str | None:
        return config.get("torch_dtype") or config.get("dtype")

    def _config_text(self, config: dict) -> str:
        # Verbatim except the dtype field, which states what the weights are stored in (a
        # trained fp32 checkpoint of a bf16 release must not say bfloat16: `from_pretrained`
        # would load it as bf16). Both spellings are kept, so transformers 4.x and 5.x read it.
        config = dict(config)
        stored = self._stored_dtype()
        if stored is not None:
            keys = [k for k in ("torch_dtype", "dtype") if k in config] or ["torch_dtype"]
            for key in keys:
                config[key] = stored
        return json.dumps(config, indent=2) + "\n"

    def __enter__(self) -> ShardedWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()
