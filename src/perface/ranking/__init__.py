"""Choosing face-swap sources: rank a pool of faces against a target.

Follow a query through the modules:

- :mod:`perface.ranking.embedder`: the embedder protocol the pool is written against (paths ->
  embeddings, boxes, failure reasons) and its adapter to :class:`perface.PerFace`.
- :mod:`perface.ranking.cache`: the pool cache file (one safetensors file, memory-mapped).
- :mod:`perface.ranking.pool`: a pool folder scanned (every file accounted for), embedded
  incrementally with progress saved every chunk, cached under a lock, sharded, and opened
  without rescanning.
- :mod:`perface.ranking.search`: exact chunked cosine search over (N, D) embeddings or a set of
  shards, similarities clamped to [-1, 1].
- :mod:`perface.ranking.rank`: :func:`perface.rank` and :class:`perface.RankResult` (photos in;
  CSV, plots, failure report and summary, each with the metric signature, out).
- :mod:`perface.ranking.plots`: contact sheet, similarity histogram, similarity heatmap.
"""
