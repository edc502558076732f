"""A user's llama.cpp file: ``--unlearn-quantized NAME=FILE.gguf``, the published GGUF of U gated as is.

Why its own kind: a ``.gguf`` file is not a Hugging Face directory (the :class:`~.artifact.ArtifactSource`
reads those). Its header was checked at option time against the target
(:func:`unlearn_assert.quant.gguf_header.check_gguf_file`); only when the row is computed is the
file read with ``gguf.GGUFReader``, every tensor dequantized with ``gguf.quants.dequantize`` and put
into U's model in place for the block (the originals are put back). Like any artifact it exists for
U only: there is no T quantized by the publisher's pipeline, so no q(T) row and no code agreement;
the report has the changed fraction against ``--unlearn-model`` and the file's tensor types.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from ...errors import BackendUnavailable, ModelError
from ...names import Role
from .artifact import ArtifactModel
from .base import Applied

if TYPE_CHECKING:  # pragma: no cover
    from ...config import RunConfig
    from ..inputs import Inputs

GGUF_INSTALL = "pip install 'unlearn-assert[gguf]'"


class GgufFileSource:
    """The GGUF file ``NAME`` of ``--unlearn-quantized NAME=FILE.gguf``."""

    roles: tuple[Role, ...] = ("unlearned",)

    @classmethod
    def accepts(cls, variant: str, run: RunConfig) -> bool:
        artifact = run.artifact(variant)
        return artifact is not None and artifact.path.lower().endswith(".gguf")

    def __init__(self, variant: str, run: RunConfig) -> None:
        artifact = run.artifact(variant)
        if artifact is None:  # pragma: no cover - accepts() said otherwise
            raise ValueError(f"'{variant}' is not an --unlearn-quantized file")
        self.variant = variant
        self.path = artifact.path
        self.run = run

    def key_parts(self, role: Role, inputs: Inputs) -> dict[str, Any]:
        """The file's content (its changed fraction is measured against U, which is in the key already)."""
        return {"variant": "gguf-file:" + inputs.artifact_fingerprint(self.variant, self.path)}

    @contextmanager
    def apply(self, role: Role, inputs: Inputs, handoff: Any = None) -> Iterator[Applied]:
        if role not in self.roles:
            raise ValueError(
                f"'{self.variant}' is your GGUF file of the unlearned model; there is no {role} version of it"
            )
        from ...quant.gguf_header import check_gguf_file

        start = time.perf_counter()
        header = check_gguf_file(self.variant, self.path, self.run.target)
        try:
            from ...quant import gguf_convert as conv
        except ImportError as exc:
            raise BackendUnavailable(
                f"GGUF file '{self.variant}' needs {getattr(exc, 'name', None) or 'gguf'}, which is not installed; "
                f"install it with: {GGUF_INSTALL}",
                install=GGUF_INSTALL,
            ) from None
        loaded = inputs.model("unlearned")
        model = loaded.model
        hp = conv.hparams(model.config)
        plan = conv.tensor_plan(model, hp)
        tensors = conv.read_quantized(self.path)
        weights = conv.dequantized_weights(tensors, plan, hp)
        state = model.state_dict()
        names: list[str] = []
        n = changed = 0
        for g, name in plan.items():
            if tensors[g].type_id in conv.FLOAT_TYPE_IDS:
                continue
            names.append(name)
            n += weights[name].size
            changed += int((weights[name] != state[name].detach().cpu().float().numpy()).sum())
        if n == 0 or changed == 0:
            raise ModelError(
                f"GGUF file '{self.variant}' at '{self.path}' has no quantized tensor that differs from the unlearned "
                "model; "
                "pass a quantized GGUF of --unlearn-model"
            )
        originals = conv.load_into(model, weights)
        del weights, tensors
        try:
            details = conv.GgufDetails(
                quantizer=self.variant,
                backend="gguf-file",
                bits=None,
                group_size=None,
                symmetric=False,
                modules=names,
                n_weights=n,
                changed_fraction=changed / n if n else 0.0,
                seconds=time.perf_counter() - start,
                preset=str(header.metadata.get("general.file_type", "")),
                tensor_types=header.types,
            )
            view = ArtifactModel(
                model=model,
                tokenizer=loaded.tokenizer,
                path=self.path,
                fingerprint=inputs.artifact_fingerprint(self.variant, self.path),
                device=loaded.device,
                dtype=loaded.dtype,
                info={**loaded.info, "quantizer": self.variant},
                details=details,
            )
            yield Applied(view=view, details=details.to_dict())
        finally:
            conv.restore(model, originals)
