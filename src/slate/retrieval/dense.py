"""Dense retrieval: a sentence-transformers encoder and a faiss index over a ``{id, contents}`` corpus.

score(q, p) = <e(query_prefix + q), e(passage_prefix + p)> with both embeddings L2-normalised, i.e. cosine
similarity, searched exactly (``kind="flat"``, ``IndexFlatIP``) or approximately (``kind="hnsw"``,
``IndexHNSWFlat`` with the inner-product metric). This is the Search-R1 / FlashRAG setting: E5
(``intfloat/e5-base-v2``, prefixes ``"query: "`` / ``"passage: "``), mean pooling, normalised, flat inner product.

An index directory holds:

- ``index.faiss`` — the faiss index; row i of the index is line i of the corpus;
- ``corpus.jsonl`` — a copy of the corpus, unless the build was asked to reference the original file;
- ``offsets.npy`` — n + 1 byte offsets of the corpus lines, so a hit is read from disk with one ``pread``
  instead of holding 21M passages in memory (wiki-18's text alone is ~14 GB);
- ``slate_dense.json`` — encoder, prefixes, dim, kind, passage count, file names.

``DenseRetriever.load(dir, mmap=True)`` memory-maps the faiss file (``IO_FLAG_MMAP_IFC`` maps flat vectors
zero-copy; pages are read on demand and shared between processes), so a server starts in seconds.
An existing Search-R1 index (``e5_Flat.index`` + ``wiki-18.jsonl``) is adopted without re-encoding by
``link_dense_index``.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from slate.data.records import Passage
from slate.errors import RetrievalError
from slate.retrieval.base import Hit, hit_from_contents
from slate.runtime import NO_HUB_KERNELS

logger = logging.getLogger(__name__)

META_FILE = "slate_dense.json"
INDEX_FILE = "index.faiss"
CORPUS_FILE = "corpus.jsonl"
OFFSETS_FILE = "offsets.npy"
INDEX_KINDS = ("flat", "hnsw")


@dataclass(frozen=True)
class DenseIndexMeta:
    """What ``slate_dense.json`` records; relative file names are resolved against the index directory."""

    encoder: str
    dim: int
    kind: str
    passages: int
    query_prefix: str = ""
    passage_prefix: str = ""
    index_file: str = INDEX_FILE
    corpus_file: str = CORPUS_FILE
    offsets_file: str = OFFSETS_FILE
    hnsw_m: int = 32
    ef_search: int = 128
    backend: str = "dense"

    @classmethod
    def read(cls, index_dir: Path) -> DenseIndexMeta:
        path = index_dir / META_FILE
        if not path.is_file():
            raise RetrievalError(f"{index_dir}: not a slate dense index (no {META_FILE}). Build one with "
                                 "`slate index build --backend dense --corpus FILE --out DIR`.")
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            return cls(**data)
        except (json.JSONDecodeError, TypeError) as exc:
            raise RetrievalError(f"{path}: unreadable index metadata ({exc}). Rebuild the index.") from None

    def write(self, index_dir: Path) -> None:
        (index_dir / META_FILE).write_text(json.dumps(asdict(self), indent=2) + "\n", encoding="utf-8")


def resolve_encoder_path(name_or_path: str) -> str:
    """A local directory is made absolute (so the meta file still works from another cwd); a hub name is kept."""
    path = Path(name_or_path).expanduser()
    return str(path.resolve()) if path.is_dir() else name_or_path


def load_encoder(name_or_path: str, device: str = "cpu") -> Any:
    """A ``SentenceTransformer`` from a hub name or a local directory; RetrievalError with the fix if it fails."""
    try:
        from sentence_transformers import SentenceTransformer
    except ImportError:
        raise RetrievalError("dense retrieval needs sentence-transformers and faiss. Install them with "
                             "`pip install slate-rl[dense]`.") from None
    try:
        return SentenceTransformer(name_or_path, device=device, model_kwargs=dict(NO_HUB_KERNELS))
    except Exception as exc:  # hub, OS and config errors all mean "this encoder cannot be loaded"
        raise RetrievalError(f"cannot load encoder {name_or_path!r} ({type(exc).__name__}: {str(exc)[:200]}). "
                             "Pass a local model directory, or a hub name with network access "
                             "(unset HF_HUB_OFFLINE).") from None


def encode_texts(encoder: Any, texts: list[str], prefix: str = "", batch_size: int = 64,
                 show_progress: bool = False) -> np.ndarray:
    """(n, dim) float32 embeddings of ``prefix + text``, each row L2-normalised."""
    embeddings = encoder.encode([prefix + t for t in texts], batch_size=batch_size, convert_to_numpy=True,
                                normalize_embeddings=True, show_progress_bar=show_progress)
    return np.ascontiguousarray(embeddings, dtype=np.float32)


def new_faiss_index(kind: str, dim: int, hnsw_m: int = 32, ef_construction: int = 200) -> Any:
    import faiss

    if kind == "flat":
        return faiss.IndexFlatIP(dim)
    if kind == "hnsw":
        index = faiss.IndexHNSWFlat(dim, hnsw_m, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = ef_construction
        return index
    raise RetrievalError(f"unknown dense index kind {kind!r}; choose one of {list(INDEX_KINDS)} "
                         "(flat: exact, RAM = 4·dim bytes per passage; hnsw: approximate, faster on big corpora).")


def read_faiss_index(path: Path, mmap: bool = True) -> Any:
    """Read a faiss index, memory-mapped where this faiss build can map it; else read into RAM."""
    import faiss

    if not path.is_file():
        raise RetrievalError(f"{path}: no faiss index file. Rebuild the index, or fix index_file in {META_FILE}.")
    if mmap:
        flags = getattr(faiss, "IO_FLAG_MMAP_IFC", faiss.IO_FLAG_MMAP) | getattr(faiss, "IO_FLAG_READ_ONLY", 0)
        try:
            return faiss.read_index(str(path), flags)
        except RuntimeError as exc:
            logger.warning("%s: faiss cannot memory-map this index (%s); reading it into RAM", path, exc)
    return faiss.read_index(str(path))


def corpus_line_offsets(corpus_path: Path) -> np.ndarray:
    """int64 byte offsets of each non-blank line, plus the file size at the end: line i is [o[i], o[i+1])."""
    offsets: list[int] = []
    position = 0
    with corpus_path.open("rb") as handle:
        for line in handle:
            if line.strip():
                offsets.append(position)
            position += len(line)
    offsets.append(position)
    return np.asarray(offsets, dtype=np.int64)


class CorpusTable:
    """Random access to corpus passages by row number, via a byte-offset table and ``os.pread`` (thread-safe)."""

    def __init__(self, corpus_path: Path, offsets: np.ndarray) -> None:
        self.path = corpus_path
        self.offsets = offsets
        self._fd = os.open(corpus_path, os.O_RDONLY)

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def __del__(self) -> None:
        fd = getattr(self, "_fd", None)
        if fd is not None:
            os.close(fd)

    def get(self, row: int) -> Passage:
        start, end = int(self.offsets[row]), int(self.offsets[row + 1])
        raw = os.pread(self._fd, end - start, start)
        try:
            obj = json.loads(raw)
            return Passage(id=str(obj["id"]), contents=str(obj["contents"]))
        except (json.JSONDecodeError, KeyError, TypeError):
            raise RetrievalError(f"{self.path}: passage row {row} (byte {start}) is not an {{id, contents}} "
                                 "object; the corpus changed after the index was built. Rebuild the index.") \
                from None


def _stream_passages(corpus_path: Path) -> Iterator[Passage]:
    with corpus_path.open(encoding="utf-8") as handle:
        for line_number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
                yield Passage(id=str(obj["id"]), contents=str(obj["contents"]))
            except (json.JSONDecodeError, KeyError, TypeError):
                raise RetrievalError(f"{corpus_path}:{line_number}: not an {{id, contents}} JSON object. "
                                     "Fix the corpus row.") from None


class DenseRetriever:
    """Implements ``Retriever`` over a faiss index, an encoder and a corpus table."""

    def __init__(self, index: Any, corpus: CorpusTable, encoder: Any, meta: DenseIndexMeta,
                 batch_size: int = 64) -> None:
        if index.ntotal != len(corpus):
            raise RetrievalError(f"{corpus.path}: the corpus has {len(corpus)} passages but the faiss index has "
                                 f"{index.ntotal} vectors; they must match row for row. Rebuild the index.")
        self.index = index
        self.corpus = corpus
        self.encoder = encoder
        self.meta = meta
        self.batch_size = batch_size
        self.dropped_hits = 0  # faiss slots with no vector behind them (k above the reachable count)
        # one search at a time: the encoder and HNSW's efSearch are shared state
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self.corpus)

    @classmethod
    def load(cls, index_dir: str | Path, mmap: bool = True, encoder: Any | str | None = None,
             device: str = "cpu", batch_size: int = 64) -> DenseRetriever:
        """Open an index directory. ``encoder`` overrides the recorded one (a loaded model, or a name/path)."""
        index_dir = Path(index_dir)
        meta = DenseIndexMeta.read(index_dir)
        corpus_path = index_dir / meta.corpus_file
        if not corpus_path.is_file():
            raise RetrievalError(f"{corpus_path}: the index's corpus is missing. Restore it, or fix corpus_file in "
                                 f"{index_dir / META_FILE}.")
        offsets = np.load(index_dir / meta.offsets_file, mmap_mode="r")
        index = read_faiss_index(index_dir / meta.index_file, mmap=mmap)
        if index.d != meta.dim:
            raise RetrievalError(f"{index_dir}: the faiss index has dim {index.d}, the meta says {meta.dim}. "
                                 "Rebuild the index.")
        model = load_encoder(encoder or meta.encoder, device) if encoder is None or isinstance(encoder, str) \
            else encoder
        retriever = cls(index, CorpusTable(corpus_path, offsets), model, meta, batch_size)
        retriever.check_encoder_dim()
        logger.info("loaded dense index %s: %d passages, %s, dim %d", index_dir, len(retriever), meta.kind, meta.dim)
        return retriever

    def check_encoder_dim(self) -> None:
        dim = self.encoder.get_embedding_dimension()
        if dim is not None and dim != self.meta.dim:
            raise RetrievalError(f"encoder {self.meta.encoder!r} gives {dim}-dim embeddings but the index holds "
                                 f"{self.meta.dim}-dim vectors. Use the encoder the index was built with.")

    def metrics(self) -> dict[str, float]:
        """Hits dropped since the last call (faiss slots with no passage behind them); the count restarts from 0."""
        dropped, self.dropped_hits = self.dropped_hits, 0
        return {"retrieval/dropped_hits": float(dropped)}

    def search(self, queries: list[str], k: int) -> list[list[Hit]]:
        if not queries:
            return []
        k = min(k, len(self.corpus))
        with self._lock:
            vectors = encode_texts(self.encoder, queries, self.meta.query_prefix, self.batch_size)
            if hasattr(self.index, "hnsw"):
                self.index.hnsw.efSearch = max(self.meta.ef_search, k)
            scores, rows = self.index.search(vectors, k)  # (n_queries, k) each
        results = []
        for row_scores, row_ids in zip(scores, rows, strict=True):
            hits = []
            for score, row in zip(row_scores, row_ids, strict=True):
                if not 0 <= row < len(self.corpus):  # faiss pads with -1 when fewer than k vectors are reachable;
                    self.dropped_hits += 1  # a row past the corpus means the index and the corpus disagree
                    continue
                passage = self.corpus.get(int(row))
                hits.append(hit_from_contents(passage.id, passage.contents, float(score)))
            results.append(hits)
        return results


def build_dense_index(corpus_path: str | Path, encoder: str, out_dir: str | Path, kind: str = "flat",
                      query_prefix: str = "", passage_prefix: str = "", batch_size: int = 64,
                      hnsw_m: int = 32, ef_construction: int = 200, ef_search: int = 128,
                      copy_corpus: bool = True, device: str = "cpu", show_progress: bool = True,
                      encoder_model: Any | None = None) -> DenseIndexMeta:
    """Encode every passage of ``corpus_path`` and write an index directory (see the module docstring).

    ``encoder`` is the name or path recorded in the meta; ``encoder_model`` (optional) is an already loaded model
    for it. ``copy_corpus=False`` records the corpus's absolute path instead of copying it (for a 14 GB wiki-18).
    Passages are streamed in chunks of 64 batches, so memory is the index plus one chunk.
    """
    from tqdm.auto import tqdm

    corpus_path = Path(corpus_path)
    out = Path(out_dir)
    if not corpus_path.is_file():
        raise RetrievalError(f"{corpus_path}: no such corpus file. Pass a jsonl of {{id, contents}} rows.")
    if kind not in INDEX_KINDS:
        new_faiss_index(kind, 1)  # raises the message listing the kinds
    out.mkdir(parents=True, exist_ok=True)
    offsets = corpus_line_offsets(corpus_path)
    count = len(offsets) - 1
    if count == 0:
        raise RetrievalError(f"{corpus_path}: the corpus is empty; nothing to index.")
    model = encoder_model if encoder_model is not None else load_encoder(encoder, device)
    dim = int(model.get_embedding_dimension())
    index = new_faiss_index(kind, dim, hnsw_m, ef_construction)
    chunk: list[str] = []
    chunk_size = batch_size * 64
    with tqdm(total=count, unit="passage", desc=f"encoding {corpus_path.name}", disable=not show_progress) as bar:
        for passage in _stream_passages(corpus_path):
            chunk.append(passage.contents)
            if len(chunk) == chunk_size:
                index.add(encode_texts(model, chunk, passage_prefix, batch_size))
                bar.update(len(chunk))
                chunk = []
        if chunk:
            index.add(encode_texts(model, chunk, passage_prefix, batch_size))
            bar.update(len(chunk))
    import faiss

    faiss.write_index(index, str(out / INDEX_FILE))
    if copy_corpus:
        corpus_file = CORPUS_FILE
        if corpus_path.resolve() != (out / CORPUS_FILE).resolve():
            with corpus_path.open("rb") as src, (out / CORPUS_FILE).open("wb") as dst:
                while block := src.read(1 << 20):
                    dst.write(block)
    else:
        corpus_file = str(corpus_path.resolve())
    np.save(out / OFFSETS_FILE, offsets)
    meta = DenseIndexMeta(encoder=resolve_encoder_path(encoder), dim=dim, kind=kind, passages=count,
                          query_prefix=query_prefix, passage_prefix=passage_prefix, corpus_file=corpus_file,
                          hnsw_m=hnsw_m, ef_search=ef_search)
    meta.write(out)
    logger.info("wrote %s dense index over %d passages to %s", kind, count, out)
    return meta


def link_dense_index(faiss_path: str | Path, corpus_path: str | Path, encoder: str, out_dir: str | Path,
                     query_prefix: str = "query: ", passage_prefix: str = "passage: ") -> DenseIndexMeta:
    """Adopt an existing faiss index (e.g. Search-R1's ``e5_Flat.index`` over ``wiki-18.jsonl``) without
    re-encoding: write the offsets table and a meta file that point at the original files."""
    import faiss

    faiss_path, corpus_path, out = Path(faiss_path).resolve(), Path(corpus_path).resolve(), Path(out_dir)
    if not corpus_path.is_file():
        raise RetrievalError(f"{corpus_path}: no such corpus file. Pass the jsonl the faiss index was built over.")
    index = read_faiss_index(faiss_path, mmap=True)
    offsets = corpus_line_offsets(corpus_path)
    if index.ntotal != len(offsets) - 1:
        raise RetrievalError(f"{faiss_path} holds {index.ntotal} vectors but {corpus_path} has {len(offsets) - 1} "
                             "passages; pass the corpus the index was built over.")
    kind = "hnsw" if isinstance(index, faiss.IndexHNSW) else "flat"
    out.mkdir(parents=True, exist_ok=True)
    np.save(out / OFFSETS_FILE, offsets)
    meta = DenseIndexMeta(encoder=resolve_encoder_path(encoder), dim=int(index.d), kind=kind,
                          passages=int(index.ntotal), query_prefix=query_prefix, passage_prefix=passage_prefix,
                          index_file=str(faiss_path), corpus_file=str(corpus_path))
    meta.write(out)
    return meta
