"""Collect people's triplet judgments in a browser, in the format training reads.

The loop: :func:`make_study` chooses triplets (random, where the metric is least sure, or the
SimCelebA design) and catch trials; ``perface annotate serve`` (:func:`serve`) shows them to
annotators and stores every answer durably (:class:`AnswerStore`); :func:`export` writes the
triplet CSV for ``python -m perface.train`` / ``python -m perface.eval triplets`` with a quality
report (catch-trial accuracy, agreement with the majority, D1/D2, Krippendorff's alpha).

The web server needs the ``annotate`` extra: ``pip install "perface[annotate]"``.
"""

from .export import AnnotatorQuality, ExportReport, export, write_report
from .make import MODES, make_study
from .server import serve
from .store import AnswerStore
from .study import Item, Study, load_study

__all__ = [
    "make_study",
    "MODES",
    "serve",
    "export",
    "write_report",
    "ExportReport",
    "AnnotatorQuality",
    "AnswerStore",
    "Item",
    "Study",
    "load_study",
]
