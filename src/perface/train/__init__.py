"""Fine-tuning a face embedding on human triplet judgments (the PerFace recipe).

``python -m perface.train --data DIR --out DIR`` trains; ``python -m perface.train.synthetic``
writes a generated triplet set in SimCelebA's format. The pieces, each in its own module:

- :mod:`.data`: triplet sets (SimCelebA folders, generic CSVs), majority / unanimous answers;
- :mod:`.splits`: random and identity-disjoint (grid protocol) splits;
- :mod:`.dataset`: images of a triplet set as tensors;
- :mod:`.loss`: the cosine triplet margin loss;
- :mod:`.evaluate`: triplet accuracy of a model;
- :mod:`.trainer`: the training loop (DDP, AMP, resume, early stopping);
- :mod:`.output`: the trained checkpoint directory and its model card.
"""

from .loss import triplet_margin_cosine_loss

__all__ = ["triplet_margin_cosine_loss"]
