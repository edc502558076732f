"""Sources: what turns the loaded U (or T) into the variant a row measures.

A row is (role, variant). The variant ``fp`` is the model as loaded; every other variant comes from a
:class:`Source`, which applies it to a loaded model for the duration of a ``with`` block and reports
what it did (its details). Four kinds exist, and the engine treats them alike (it has no branch on any):

* :class:`~.quantizer.QuantizerSource`: a quantizer id of the backend registry
  (``rtn-w4g128``, ``bnb-fp4``, ``gptq-w4g128``...), applied to U and to T (q(T) is the reference);
* :class:`~.artifact.ArtifactSource`: the user's artifact, a quantized checkpoint directory
  (``--unlearn-quantized NAME=DIR``), which exists for U only;
* :class:`~.gguf_file.GgufFileSource`: the user's artifact as a llama.cpp file
  (``--unlearn-quantized NAME=FILE.gguf``), also for U only;
* :class:`~.relearn.RelearnSource`: a relearning attack (``relearn-forget-50``, ``relearn-retain-50-lora``),
  a short fine-tune of U and of T, measured on a restricted data view (:attr:`~.base.Applied.data`).

**Handing T's variant on to U's.** ``apply`` on T may return :attr:`~.base.Applied.handoff` (GPTQ/AWQ: T's
codes, minutes of work); the engine computes the q(T) row first and passes that object as
``handoff`` to the same source's ``apply`` on U, so T is not quantized twice.

**Adding a kind** takes one module with a class that satisfies :class:`~.base.SourceKind` (``roles``,
``accepts``, ``key_parts``, ``apply``; :mod:`.gguf_file` is a complete example in about 100 lines) and
one entry in :data:`SOURCE_KINDS`, most specific first. ``tests/engine/test_engine.py`` registers a toy kind
that way without touching the engine.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .artifact import ArtifactSource
from .base import Applied, Source, SourceKind
from .gguf_file import GgufFileSource
from .quantizer import QuantizerSource
from .relearn import RelearnSource

if TYPE_CHECKING:  # pragma: no cover
    from ...config import RunConfig

__all__ = [
    "SOURCE_KINDS",
    "Applied",
    "ArtifactSource",
    "GgufFileSource",
    "QuantizerSource",
    "RelearnSource",
    "Source",
    "SourceKind",
    "source_for",
]

#: The kinds of source, most specific first: the first whose ``accepts(variant, run)`` holds makes the row's source.
SOURCE_KINDS: tuple[type[SourceKind], ...] = (GgufFileSource, ArtifactSource, RelearnSource, QuantizerSource)


def source_for(variant: str, run: RunConfig) -> Source:
    """The source of ``variant`` in this run: an artifact the user named, else a registry quantizer."""
    for kind in SOURCE_KINDS:
        if kind.accepts(variant, run):
            return kind(variant, run)
    raise ValueError(f"no source makes the variant '{variant}'")  # the run's id grammar accepted it: a bug
