"""A list of variant ids as users write it: quantizer ids and attack ids, in one option.

Why one list: every variant (``rtn-w4g64``, ``relearn-forget-50``) becomes the same rows, items and
budget keys, so ``--unlearn-quantizers`` accepts both (and ``--unlearn-attacks`` is its alias for
attacks). Each id is parsed by its own grammar (:mod:`.quantizers`, :mod:`.attacks`); this package's
``__init__`` only splits, dispatches and refuses duplicates. Pure Python: the plugin parses ids while
pytest parses options, so a typo fails in milliseconds.
"""

from __future__ import annotations

from ..errors import QuantizerError
from .attacks import ATTACK_GRAMMAR, is_attack_id, parse_attack_id
from .quantizers import known_ids, parse_quantizer_id, split_id_list

__all__ = ["canonical_variant", "validate_variant_list"]


def canonical_variant(vid: str) -> str:
    """The canonical spelling of a quantizer or attack id (raises :class:`QuantizerError` when invalid)."""
    if is_attack_id(vid):
        return parse_attack_id(vid).canonical_id
    try:
        return parse_quantizer_id(vid).canonical_id
    except QuantizerError as exc:
        if str(exc).startswith("unknown quantizer"):
            raise QuantizerError(f"{exc}; attacks: {ATTACK_GRAMMAR}") from None
        raise


def validate_variant_list(text: str, what: str = "quantizer") -> tuple[str, ...]:
    """Split ``"rtn-w4g64, relearn-forget-50"`` (commas and/or whitespace) into valid ids; empty
    entries and duplicates (also spelled differently: ``rtn-w8`` and ``rtn-w8-sym``) are errors."""
    return split_id_list(text, canonical_variant, what, f"{', '.join(known_ids()[:2])}, relearn-forget-50")
