"""Nearest-neighbour search over global descriptors: the one place that talks to FAISS.

Exact inner-product search (``IndexFlatIP``) on L2-normalised descriptors; queries are searched in
blocks, so the full query x database similarity matrix is never built.
"""

from __future__ import annotations

from pathlib import Path

import faiss
import numpy as np

from ..errors import InputError
from ..io.atomic import atomic_path


class GlobalIndex:
    """Database descriptors with their image names.

    Args:
        descriptors: ``(N, D)`` float32, L2-normalised.
        names: the N database image names, in row order.
    """

    def __init__(self, descriptors: np.ndarray, names: list[str]) -> None:
        descriptors = np.ascontiguousarray(descriptors, dtype=np.float32)
        if descriptors.ndim != 2 or len(descriptors) != len(names):
            raise ValueError(f"need (N, D) descriptors for {len(names)} names, got {descriptors.shape}")
        self.names = list(names)
        self.index = faiss.IndexFlatIP(descriptors.shape[1])
        self.index.add(descriptors)

    @classmethod
    def from_faiss(cls, index: faiss.Index, names: list[str]) -> GlobalIndex:
        self = cls.__new__(cls)
        if index.ntotal != len(names):
            raise ValueError(f"index holds {index.ntotal} vectors but {len(names)} names were given")
        self.index, self.names = index, list(names)
        return self

    def __len__(self) -> int:
        return len(self.names)

    @property
    def dim(self) -> int:
        return int(self.index.d)

    def search(self, queries: np.ndarray, k: int, block: int = 1024) -> tuple[np.ndarray, np.ndarray]:
        """Top-``k`` database rows for each query.

        Args:
            queries: ``(M, D)`` float32.
            k: neighbours per query (clipped to the database size).

        Returns:
            ``scores (M, k)`` (inner products, descending) and ``indices (M, k)`` into :attr:`names`.
        """
        queries = np.ascontiguousarray(np.atleast_2d(queries), dtype=np.float32)
        k = min(k, len(self))
        scores, indices = [], []
        for start in range(0, len(queries), block):
            s, i = self.index.search(queries[start : start + block], k)
            scores.append(s)
            indices.append(i)
        if not scores:
            return np.zeros((0, k), np.float32), np.zeros((0, k), np.int64)
        return np.concatenate(scores), np.concatenate(indices)

    def save(self, path: str | Path) -> None:
        with atomic_path(path) as tmp:
            faiss.write_index(self.index, str(tmp))

    @classmethod
    def load(cls, path: str | Path, names: list[str]) -> GlobalIndex:
        path = Path(path)
        if not path.is_file():
            raise InputError(path, "FAISS index file does not exist")
        try:
            index = faiss.read_index(str(path))
        except RuntimeError as e:
            raise InputError(path, f"cannot read FAISS index ({e})") from None
        if index.ntotal != len(names):
            raise InputError(path, f"index holds {index.ntotal} vectors but {len(names)} image names were given")
        return cls.from_faiss(index, names)
