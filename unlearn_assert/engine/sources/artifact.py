"""Variants the user made: ``--unlearn-quantized NAME=DIR``, a quantized checkpoint of U gated as is.

Why a source of its own: the quantizer rows answer "what would a user's quantizer do to U"; a
provider who publishes a quantized artifact must gate *that* file, made by their own pipeline. It is
loaded as it is (:func:`unlearn_assert.quant.artifact.open_artifact`) and compared with U for its
changed fraction; there is no T quantized by the same pipeline, so it has no q(T) row and no code
agreement.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ...models import LoadedModel
from ...names import Role
from .base import Applied

if TYPE_CHECKING:  # pragma: no cover
    from ...config import RunConfig
    from ...quant.base import QuantDetails
    from ..inputs import Inputs


@dataclass
class ArtifactModel(LoadedModel):
    """A loaded artifact with the details of what it changed, as the ``quantized`` fixture gives it."""

    details: QuantDetails | None = None


class ArtifactSource:
    """The artifact ``NAME`` of ``--unlearn-quantized NAME=DIR``."""

    roles: tuple[Role, ...] = ("unlearned",)

    @classmethod
    def accepts(cls, variant: str, run: RunConfig) -> bool:
        return run.artifact(variant) is not None

    def __init__(self, variant: str, run: RunConfig) -> None:
        artifact = run.artifact(variant)
        if artifact is None:  # pragma: no cover - accepts() said otherwise
            raise ValueError(f"'{variant}' is not an --unlearn-quantized artifact")
        self.variant = variant
        self.artifact = artifact
        self.run = run

    def key_parts(self, role: Role, inputs: Inputs) -> dict[str, Any]:
        """The artifact's content (and through it, the model its changed fraction is measured against)."""
        return {"variant": "artifact:" + inputs.artifact_fingerprint(self.variant, self.artifact.path)}

    @contextmanager
    def apply(self, role: Role, inputs: Inputs, handoff: Any = None) -> Iterator[Applied]:
        from ...quant.artifact import open_artifact, read_artifact

        if role not in self.roles:
            raise ValueError(
                f"'{self.variant}' is your quantized unlearned checkpoint; there is no {role} version of it"
            )
        info = read_artifact(self.variant, self.artifact.path)
        run = self.run
        with open_artifact(
            info,
            inputs.model("unlearned"),
            device=inputs.device,
            dtype=None if run.dtype == "auto" else run.dtype,
            known_fingerprint=inputs.artifact_fingerprint(self.variant, self.artifact.path),
        ) as (loaded, details):
            view = ArtifactModel(**vars(loaded), details=details)
            yield Applied(view=view, details=details.to_dict())
