"""Sources: what turns the loaded U (or T) into the variant a row measures.

A row is (role, variant). The variant ``fp`` is the model as loaded; every other variant comes from a
:class:`Source`, which applies it to a loaded model for the duration of a ``with`` block and reports
what it did. Three kinds exist today, and the engine treats them alike (it has no branch on any):

* :class:`~.quantizer.QuantizerSource`: a quantizer id of the backend registry
  (``rtn-w4g128``, ``bnb-fp4``, ``gptq-w4g128``...), applied to U and to T (q(T) is the reference);
* :class:`~.artifact.ArtifactSource`: the user's own quantized checkpoint
  (``--unlearn-quantized NAME=DIR``), which exists for U only;
* :class:`~.relearn.RelearnSource`: a relearning attack (``relearn-forget-50``, ``relearn-retain-50-lora``),
  a short fine-tune of U and of T, measured on a restricted data view (:attr:`Applied.data`).
* :class:`~.gguf_file.GgufFileSource`: the user's llama.cpp file (``--unlearn-quantized NAME=FILE.gguf``),
  also for U only, written as sketched below.

**Handing T's variant on to U's.** ``apply`` on T may return :attr:`Applied.handoff` (GPTQ/AWQ: T's
codes, minutes of work); the engine computes the q(T) row first and passes that object as
``handoff`` to the same source's ``apply`` on U, so T is not quantized twice.

**Adding a kind** takes one module with a class that satisfies :class:`SourceKind`, and one entry in
:data:`SOURCE_KINDS`. The next one, a user's llama.cpp file (``--unlearn-quantized NAME=FILE.gguf``),
is written like this::

    # gate/sources/gguf_file.py
    class GgufFileSource:
        roles = ("unlearned",)                      # a published file of U; there is no q(T) of it
        @classmethod
        def accepts(cls, variant, run):             # the artifact named `variant` is a .gguf file
            a = run.artifact(variant)
            return a is not None and a.path.endswith(".gguf")
        def __init__(self, variant, run): ...
        def key_parts(self, role, inputs):          # the file's content, never its path
            return {"quantizer": "gguf-file:" + inputs.artifact_fingerprint(self.variant, self.path)}
        @contextmanager
        def apply(self, role, inputs, handoff=None):
            model = dequantize_gguf(self.path, like=inputs.model("unlearned"))   # gguf's own dequantize
            yield Applied(view=model, quant={"types": ..., "changed_fraction": ...})

    # gate/sources/__init__.py
    SOURCE_KINDS = (GgufFileSource, ArtifactSource, QuantizerSource)   # most specific first
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

__all__ = ["SOURCE_KINDS", "Applied", "ArtifactSource", "GgufFileSource", "QuantizerSource", "RelearnSource", "Source", "SourceKind",
           "source_for"]

#: The kinds of source, most specific first: the first whose ``accepts(variant, run)`` holds makes the row's source.
SOURCE_KINDS: tuple[type[SourceKind], ...] = (GgufFileSource, ArtifactSource, RelearnSource, QuantizerSource)


def source_for(variant: str, run: RunConfig) -> Source:
    """The source of ``variant`` in this run: an artifact the user named, else a registry quantizer."""
    for kind in SOURCE_KINDS:
        if kind.accepts(variant, run):
            return kind(variant, run)
    raise ValueError(f"no source makes the variant '{variant}'")  # validate_quantizer_list accepted it: a bug
