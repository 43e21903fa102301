"""Fine-tuning a face embedding on human triplet judgments (the PerFace recipe).

``python -m perface.train --data DIR --out DIR`` trains; ``python -m perface.train.synthetic``
writes a generated triplet set in SimCelebA's format. The pieces, each in its own module:

- :mod:`.config`: every knob, and the two recipes (``default`` for small sets, ``paper``);
- :mod:`.data`: triplet sets (SimCelebA folders, generic CSVs), majority / unanimous answers,
  and the one-line summary of missing or unusable images;
- :mod:`.splits`: random and identity-disjoint (grid protocol) splits, validation top-up;
- :mod:`.dataset`: every image of a set decoded once (an image bank), triplets as tensors;
- :mod:`.loss`: the cosine triplet margin loss;
- :mod:`.evaluate`: triplet accuracy of a model;
- :mod:`.trainer`: the training loop (DDP, AMP, CPU micro-batches, resume, early stopping);
- :mod:`.output`: the trained checkpoint directory and its model card;
- :mod:`.synthetic`: generated triplet sets (the proof that training learns).
"""

from .loss import triplet_margin_cosine_loss

__all__ = ["triplet_margin_cosine_loss"]
