"""Choosing face-swap sources: rank a pool of faces against a target.

- :mod:`perface.ranking.search`: exact chunked cosine search over an (N, D) embedding matrix.
- :mod:`perface.ranking.pool`: a pool folder's embeddings, cached on disk, updated incrementally.
- :mod:`perface.ranking.rank`: :func:`perface.rank` and :class:`perface.RankResult` (photos in,
  CSV and plots out).
- :mod:`perface.ranking.plots`: contact sheet, similarity histogram, similarity heatmap.
"""
