"""The contract of a variant source (see :mod:`unlearn_assert.engine.sources` for the kinds)."""

from __future__ import annotations

from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from ...names import Role

if TYPE_CHECKING:  # pragma: no cover
    from ...config import RunConfig
    from ...data.muse import MuseData
    from ...models import LoadedModel
    from ...quant import QuantizedModel
    from ..inputs import Inputs

__all__ = ["Applied", "Source", "SourceKind"]


@dataclass
class Applied:
    """A variant in effect: the model to evaluate, what the source did, and what T's variant hands to U's."""

    #: what :func:`unlearn_assert.evaluate` measures (a quantized view, or a loaded artifact)
    view: LoadedModel | QuantizedModel
    #: the row's details: what the source did (a quantizer's ``changed_fraction``, ``code_agreement``...;
    #: an attack's training record)
    details: dict[str, Any] = field(default_factory=dict)
    #: from ``apply(role="target")`` only: passed back as ``handoff`` to ``apply(role="unlearned")``
    handoff: Any = None
    #: the data to evaluate the view on, when not the run's (relearn-forget: only the held-out items)
    data: MuseData | None = None
    #: with ``data``: metric -> the run data's index of each evaluated item (the samples are renumbered to it)
    sample_ids: dict[str, list[int]] | None = None


class Source(Protocol):
    """What a row's variant comes from (see the module docstring)."""

    #: the variant's name: a row's ``quantizer`` field and its items' prefix (``test_budget[<variant>-...]``)
    variant: str
    #: the models this variant exists for; a quantizer's includes ``target`` (the q(T) reference row)
    roles: tuple[Role, ...]

    def key_parts(self, role: Role, inputs: Inputs) -> dict[str, Any]:
        """What determines the variant's numbers besides the model and the data (its part of the row's
        cache key): content hashes and canonical settings, never paths."""
        ...

    def apply(self, role: Role, inputs: Inputs, handoff: Any = None) -> AbstractContextManager[Applied]:
        """The variant of ``inputs.model(role)`` for the block; the model is as loaded again afterwards."""
        ...


class SourceKind(Source, Protocol):
    """A kind of source, as :data:`~unlearn_assert.engine.sources.SOURCE_KINDS` holds it: it says which variants
    are its own."""

    @classmethod
    def accepts(cls, variant: str, run: RunConfig) -> bool: ...

    def __init__(self, variant: str, run: RunConfig) -> None: ...
