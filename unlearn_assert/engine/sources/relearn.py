"""Relearning attacks: ``relearn-forget-<steps>`` and ``relearn-retain-<steps>`` (``-lora``), applied to U and T.

What a row measures: the model after a short fine-tune (:func:`unlearn_assert.unlearning.finetune.finetune`;
AdamW, lr 2e-5 constant, batch 4, 128 tokens, seed 0, fp32 weights on CPU and bf16 on a GPU: see
:mod:`unlearn_assert.variants.attacks` and docs/relearning.md). ``relearn-forget`` trains on the held-in half
of the forget documents; ``relearn-retain`` on the raw retain text. The same attack on T is the
q(T) analogue: how far fine-tuning moves the target itself.

**Split honesty.** A relearn-forget row's ``verbmem_f`` and ``knowmem_f`` are computed only on the
items whose source documents were not trained on (:mod:`unlearn_assert.data.links` defines the link
and the split). The source evaluates its view on a *restricted data view* (:attr:`Applied.data`:
the run's data with those two splits cut to the held-out items; every other split whole) and
renumbers the samples to the run data's item indices (:attr:`Applied.sample_ids`). The split, with
the trained documents and the evaluated indices, is the row's ``details["split"]``, re-checked
(:meth:`~unlearn_assert.data.links.RelearnSplit.check`) before every fine-tune.

**Recovery compares like with like.** ``(m(relearn(U)) - m(U)) / (m(T) - m(U))`` takes m(U) and
m(T) on the same held-out items: the means of the fp rows' per-item scores over the evaluated
indices (:func:`unlearn_assert.engine.derive.figures`, ``Figures.baselines``). Why this and not
extra fp rows on the restricted data: the fp rows already hold every item's score, so the reference
costs no model run and no second cache entry, and it cannot drift from the fp row it is part of;
the floor check (did unlearning work?) is applied to the same restricted values.

**Cost.** The fine-tune runs once per (model, attack): its row is cached by content like any row
(:func:`~unlearn_assert.engine.rows.row_key`: the model's fingerprint, the data's, and here the
canonical id, every training setting and the split). Full fine-tuning trains one deep copy of the
weights (plus its gradients and AdamW moments while training), freed when the row is done; ``-lora``
wraps the loaded model's linear layers in peft adapters in place (no copy) and unloads them after,
leaving the model bit for bit as loaded.
"""

from __future__ import annotations

import copy
import gc
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from ...errors import BackendUnavailable, UnlearnAssertError
from ...models import LoadedModel
from ...names import Role
from ...plain import digest
from ...variants.attacks import LORA_DEFAULTS, RelearnSpec, is_attack_id, parse_attack_id
from .base import Applied

if TYPE_CHECKING:  # pragma: no cover
    from ...config import RunConfig
    from ...data.links import RelearnSplit
    from ..inputs import Inputs

__all__ = ["RelearnSource"]

LORA_INSTALL = "pip install 'unlearn-assert[relearn]'"


class RelearnSource:
    """``relearn-{forget,retain}-<steps>[-lora]``: U and T after a short fine-tune (see the module docstring)."""

    roles: tuple[Role, ...] = ("unlearned", "target")

    @classmethod
    def accepts(cls, variant: str, run: RunConfig) -> bool:
        return run.artifact(variant) is None and is_attack_id(variant)

    def __init__(self, variant: str, run: RunConfig) -> None:
        self.variant = variant
        self.spec: RelearnSpec = parse_attack_id(variant)
        self._split: tuple[RelearnSplit, tuple[str, ...]] | None = None

    def split(self, inputs: Inputs) -> tuple[RelearnSplit, tuple[str, ...]] | None:
        """relearn-forget's split of the run's data and the forget documents (None for relearn-retain)."""
        if self.spec.corpus != "forget":
            return None
        if self._split is None:
            self._split = inputs.benchmark.relearn_split(inputs.data)
        return self._split

    def _device(self, inputs: Inputs) -> str:
        from ...models import resolve_device

        return resolve_device(inputs.run.device)

    def key_parts(self, role: Role, inputs: Inputs) -> dict[str, Any]:
        """The canonical id, every training setting (they depend on the device: the weights' dtype), and the split."""
        split = self.split(inputs)
        parts: dict[str, Any] = {"variant": self.spec.canonical_id, "attack": self.spec.settings(self._device(inputs))}
        if split is not None:
            parts["split"] = split[0].fingerprint
        return parts

    def _text(self, inputs: Inputs) -> tuple[str, dict[str, Any]]:
        from ...data.links import training_text
        from ...data.muse import DOC_JOINER

        split = self.split(inputs)
        if split is None:
            docs = inputs.full_data.raw_retain_docs or ()
            text = DOC_JOINER.join(docs)
            return text, {"corpus": "retain", "documents": len(docs), "chars": len(text)}
        text = training_text(split[1], split[0])
        return text, {"corpus": "forget", "documents": len(split[0].trained_documents), "chars": len(text)}

    @contextmanager
    def apply(self, role: Role, inputs: Inputs, handoff: Any = None) -> Iterator[Applied]:
        from ...unlearning.finetune import finetune

        loaded = inputs.model(role)
        device = loaded.device
        settings = self.spec.settings(device)
        split = self.split(inputs)
        if split is not None:  # made (and checked) by the benchmark: no evaluated item comes from a trained document
            for note in split[0].notes:
                inputs.progress(f"{self.variant}: {note}")
        text, trained_on = self._text(inputs)
        fingerprint = digest(
            {
                "model": loaded.fingerprint,
                "attack": self.spec.canonical_id,
                "settings": settings,
                "split": split[0].fingerprint if split else None,
            }
        )
        train = dict(
            steps=self.spec.steps,
            lr=settings["lr"],
            batch_size=settings["batch_size"],
            max_length=settings["max_length"],
            seed=settings["seed"],
            device=device,
            weight_decay=settings["weight_decay"],
            what=f"{trained_on['corpus']} text",
            progress=inputs.progress,
        )
        inputs.progress(
            f"{self.variant}: fine-tune {role} on {trained_on['documents']} {trained_on['corpus']} document(s), "
            f"{self.spec.steps} steps{' (LoRA)' if self.spec.lora else ''}"
        )
        with (
            self._lora(loaded) if self.spec.lora else self._copy(loaded, settings["dtype"]) as (
                model,
                changed_of,
                extra,
            )
        ):
            result = finetune(model, loaded.tokenizer, text, **train)
            changed = changed_of()
            if changed == 0.0:
                raise UnlearnAssertError(
                    f"{self.variant} changed no weight of the {role} model; it did not take effect"
                )
            view = LoadedModel(
                model=model,
                tokenizer=loaded.tokenizer,
                path=loaded.path,
                fingerprint=fingerprint,
                device=device,
                dtype=str(next(model.parameters()).dtype).removeprefix("torch."),
                info={"attack": self.spec.canonical_id},
            )
            details: dict[str, Any] = {
                "attack": "relearn",
                "id": self.spec.canonical_id,
                "settings": settings,
                "trained_on": trained_on,
                "training": result.to_dict(),
                "changed_fraction": changed,
                **extra,
            }
            data, sample_ids = None, None
            if split is not None:
                details["split"] = split[0].to_dict()
                data = inputs.benchmark.restricted(inputs.data, split[0])
                sample_ids = {m: list(ids) for m, ids in split[0].evaluated.items()}
            yield Applied(view=view, details=details, data=data, sample_ids=sample_ids)

    @contextmanager
    def _copy(self, loaded: LoadedModel, dtype: str) -> Iterator[tuple[Any, Any, dict[str, Any]]]:
        """Full fine-tuning: one deep copy of the weights in the training dtype, dropped afterwards."""
        import torch

        held = {"model": copy.deepcopy(loaded.model).to(dtype=getattr(torch, dtype))}
        held["model"].requires_grad_(True)

        def changed() -> float:
            with torch.no_grad():
                total = moved = 0
                for before, after in zip(loaded.model.parameters(), held["model"].parameters()):
                    total += before.numel()
                    moved += int((before.to(after.dtype) != after).sum())
            return float(moved / max(total, 1))

        try:
            yield held["model"], changed, {"trainable_parameters": sum(p.numel() for p in held["model"].parameters())}
        finally:
            held.clear()  # the copy goes now, not when the caller's frame does
            gc.collect()
            if torch.cuda.is_available():
                torch.cuda.empty_cache()

    @contextmanager
    def _lora(self, loaded: LoadedModel) -> Iterator[tuple[Any, Any, dict[str, Any]]]:
        """LoRA: peft adapters around the loaded model's projections (in place, no copy), unloaded afterwards."""
        try:
            from peft import LoraConfig, get_peft_model
        except ImportError:
            raise BackendUnavailable(
                f"{self.variant} needs peft for its LoRA adapters; install it with {LORA_INSTALL}", LORA_INSTALL
            ) from None
        import torch

        base = loaded.model
        grad_state = {name: p.requires_grad for name, p in base.named_parameters()}
        present = {name.rsplit(".", 1)[-1] for name, _ in base.named_modules()}
        targets = [t for t in LORA_DEFAULTS["target_modules"] if t in present]
        if not targets:
            raise UnlearnAssertError(
                f"{self.variant}: the model has none of the LoRA target modules "
                f"{', '.join(LORA_DEFAULTS['target_modules'])}"
            )
        config = LoraConfig(
            r=LORA_DEFAULTS["r"],
            lora_alpha=LORA_DEFAULTS["lora_alpha"],
            lora_dropout=LORA_DEFAULTS["lora_dropout"],
            bias=LORA_DEFAULTS["bias"],
            target_modules=targets,
            task_type="CAUSAL_LM",
        )
        torch.manual_seed(0)  # the adapters' initialisation (A random, B zero) is part of the attack
        peft_model = get_peft_model(base, config)
        inner = peft_model.get_base_model()

        def changed() -> float:
            from peft.tuners.lora import LoraLayer

            total = sum(p.numel() for name, p in inner.named_parameters() if "lora_" not in name)
            moved = 0
            with torch.no_grad():
                for module in inner.modules():
                    if isinstance(module, LoraLayer):
                        delta: Any = module.get_delta_weight("default")  # type: ignore[operator]
                        moved += int((delta != 0).sum())
            return float(moved / max(total, 1))

        trainable = sum(p.numel() for p in peft_model.parameters() if p.requires_grad)
        try:
            yield (
                inner,
                changed,
                {"trainable_parameters": trainable, "lora": {**LORA_DEFAULTS, "target_modules": targets}},
            )
        finally:
            restored = peft_model.unload()
            for name, p in restored.named_parameters():
                p.requires_grad_(grad_state.get(name, p.requires_grad))
            loaded.model = restored
            gc.collect()
