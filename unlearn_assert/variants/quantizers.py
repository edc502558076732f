"""Quantizer ids, their parsed form, and the lazy backend registry. Pure Python: no torch here.

Why a separate, torch-free module: the pytest plugin validates ``--unlearn-quantizers`` while it
parses options, before any test runs; a typo must fail in milliseconds with a one-line message,
and ``pytest --help`` must not pay for importing torch.

Two tables, on purpose:

* :data:`ID_FORMS` knows the id grammar of every backend family the design names (rtn, bnb, gptq,
  awq, hqq, gguf), so the grammar lives in one place and stays consistent across backends.
* :data:`BACKENDS` says which of them this installation actually provides ("module:factory",
  imported only when a quantizer of that backend is used). An id parses only if its backend is
  registered, so adding a backend is one line in :data:`BACKENDS`.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from ..errors import QuantizerError

#: Bit widths an id may name. Below 2 a symmetric grid has no nonzero level; above 8 nobody ships
#: weight-only integer quantization, and the paper's question is about 4 and 8 bits.
BITS_RANGE = range(2, 9)
#: Smallest explicit group size; omit ``g<group>`` for one group per output channel.
MIN_GROUP = 2
#: bitsandbytes' 4-bit blocksize as transformers' ``BitsAndBytesConfig`` uses it (not configurable there).
BNB_4BIT_BLOCKSIZE = 64
#: Bits of each bitsandbytes scheme; ``int8`` is LLM.int8 (per-row absmax, so no group).
BNB_SCHEMES = {"fp4": 4, "nf4": 4, "int8": 8}
DEFAULT_INSTALL = "pip install unlearn-assert"


@dataclass(frozen=True)
class QuantSpec:
    """A parsed quantizer id.

    ``group_size`` None means one group per output channel (per-row scales). ``scheme`` names a
    non-integer code book or a library recipe (``fp4``, ``nf4``, ``int8``); None for integer grids.
    ``id`` is the text the user wrote (test item names use it); :attr:`canonical_id` is the same
    quantizer with defaults dropped, so ``rtn-w4g128-sym`` and ``rtn-w4g128`` share cache entries.
    """

    id: str
    backend: str
    bits: int | None
    group_size: int | None
    symmetric: bool
    scheme: str | None = None

    @property
    def canonical_id(self) -> str:
        form = ID_FORMS[self.backend]
        return form.canonical(self)


@dataclass(frozen=True)
class BackendEntry:
    """Where a backend lives ("module:factory") and the pip command that makes it importable.

    The factory is called with a :class:`QuantSpec` and returns the backend object; nothing is
    imported until then (see ``unlearn_assert.quant.get_backend``).
    """

    factory: str
    install: str = DEFAULT_INSTALL
    #: True when the backend needs calibration text (GPTQ, AWQ): ``quantized`` passes it, and it is
    #: part of the result's cache key.
    calibrated: bool = False
    #: True when the backend runs on a model that accelerate spread over several devices
    #: (``--unlearn-device-map``): rtn quantizes each weight where it lies; the others build a copy on one device.
    dispatched: bool = False


#: Backends, by name: "module:factory" imported only when an id of that backend is used, and the
#: pip command that installs its library (the reason shown when it is missing).
BACKENDS: dict[str, BackendEntry] = {
    "rtn": BackendEntry("unlearn_assert.quant.rtn:RTNBackend", dispatched=True),
    "bnb": BackendEntry("unlearn_assert.quant.bnb:BnbBackend", install="pip install 'unlearn-assert[bnb]'"),
    "hqq": BackendEntry("unlearn_assert.quant.hqq:HqqBackend", install="pip install 'unlearn-assert[hqq]'"),
    "gptq": BackendEntry(
        "unlearn_assert.quant.llmc:GptqBackend", install="pip install 'unlearn-assert[gptq]'", calibrated=True
    ),
    "awq": BackendEntry(
        "unlearn_assert.quant.llmc:AwqBackend", install="pip install 'unlearn-assert[awq]'", calibrated=True
    ),
    "gguf": BackendEntry("unlearn_assert.quant.gguf:GgufBackend", install="pip install 'unlearn-assert[gguf]'"),
}


# --------------------------------------------------------------------------- id grammar


def _number(text: str, what: str, qid: str) -> int:
    """Parse a decimal field of an id; leading zeros are refused so every quantizer has one spelling."""
    value = int(text)
    if str(value) != text:
        raise QuantizerError(
            f"invalid quantizer '{qid}': write the {what} without leading zeros ({value}); known: {_known_text()}"
        )
    return value


def _bits(text: str, qid: str) -> int:
    bits = _number(text, "bit width", qid)
    if bits not in BITS_RANGE:
        raise QuantizerError(
            f"invalid quantizer '{qid}': bits must be {BITS_RANGE.start}..{BITS_RANGE.stop - 1}, got {bits}; known: "
            f"{_known_text()}"
        )
    return bits


def _group(text: str | None, qid: str) -> int | None:
    if text is None:
        return None
    group = _number(text, "group size", qid)
    if group < MIN_GROUP:
        raise QuantizerError(
            f"invalid quantizer '{qid}': group size must be >= {MIN_GROUP} (omit g<group> for one group per output "
            "channel); "
            f"known: {_known_text()}"
        )
    return group


def _parse_int_grid(default_symmetric: bool) -> Callable[[re.Match[str], str, str], QuantSpec]:
    """Parser for the integer-grid families (``<backend>-w<bits>[g<group>][-asym|-sym]``)."""

    def parse(match: re.Match[str], qid: str, backend: str) -> QuantSpec:
        sym = match.groupdict().get("sym")
        symmetric = default_symmetric if sym is None else sym == "sym"
        return QuantSpec(qid, backend, _bits(match["bits"], qid), _group(match["group"], qid), symmetric, None)

    return parse


#: llama.cpp presets of the ``gguf-*`` ids -> nominal bits (what llama.cpp stores per tensor is in the report)
GGUF_PRESETS = {"q4_k_m": 4, "q5_k_m": 5, "q6_k": 6, "q8_0": 8, "q4_0": 4, "q3_k_m": 3, "q2_k": 2}


def _parse_gguf(match: re.Match[str], qid: str, backend: str) -> QuantSpec:
    scheme = match["scheme"]
    group = 32 if scheme.endswith("_0") else 256  # llama.cpp's block (q*_0) or super-block (k-quants)
    return QuantSpec(qid, backend, GGUF_PRESETS[scheme], group, scheme in ("q8_0", "q4_0", "q6_k"), scheme)


def _parse_bnb(match: re.Match[str], qid: str, backend: str) -> QuantSpec:
    scheme = match["scheme"]
    group = None if scheme == "int8" else BNB_4BIT_BLOCKSIZE
    return QuantSpec(qid, backend, BNB_SCHEMES[scheme], group, True, scheme)


@dataclass(frozen=True)
class IdForm:
    """The id grammar of one backend family: a regex, its parser, a human form and example ids."""

    pattern: re.Pattern[str]
    parse: Callable[[re.Match[str], str, str], QuantSpec]
    grammar: str
    examples: tuple[str, ...]
    default_symmetric: bool = True

    def canonical(self, spec: QuantSpec) -> str:
        if spec.scheme is not None:
            return f"{spec.backend}-{spec.scheme}"
        text = f"{spec.backend}-w{spec.bits}" + ("" if spec.group_size is None else f"g{spec.group_size}")
        if spec.symmetric != self.default_symmetric:
            text += "-sym" if spec.symmetric else "-asym"
        return text


def _int_form(backend: str, examples: tuple[str, ...], *, group_required: bool, default_symmetric: bool) -> IdForm:
    group = r"g(?P<group>\d{1,6})" if group_required else r"(?:g(?P<group>\d{1,6}))?"
    pattern = re.compile(rf"{backend}-w(?P<bits>\d{{1,3}}){group}(?:-(?P<sym>asym|sym))?")
    grammar = (
        f"{backend}-w<bits>"
        + ("g<group>" if group_required else "[g<group>]")
        + ("[-asym]" if default_symmetric else "[-sym]")
    )
    return IdForm(pattern, _parse_int_grid(default_symmetric), grammar, examples, default_symmetric)


#: Grammar of every backend family the design names, registered or not. GPTQ defaults to a
#: symmetric grid; AWQ and HQQ default to asymmetric (zero point), as their libraries do.
ID_FORMS: Mapping[str, IdForm] = {
    "rtn": _int_form(
        "rtn", ("rtn-w4g128", "rtn-w8", "rtn-w4g64-asym", "rtn-w3g64"), group_required=False, default_symmetric=True
    ),
    "bnb": IdForm(
        re.compile(r"bnb-(?P<scheme>fp4|nf4|int8)"),
        _parse_bnb,
        "bnb-{fp4,nf4,int8}",
        ("bnb-fp4", "bnb-nf4", "bnb-int8"),
    ),
    "gptq": _int_form("gptq", ("gptq-w4g128", "gptq-w8g128"), group_required=True, default_symmetric=True),
    "awq": _int_form("awq", ("awq-w4g128",), group_required=True, default_symmetric=False),
    "hqq": _int_form("hqq", ("hqq-w4g64",), group_required=True, default_symmetric=False),
    "gguf": IdForm(
        re.compile(rf"gguf-(?P<scheme>{'|'.join(GGUF_PRESETS)})"),
        _parse_gguf,
        "gguf-{" + ",".join(GGUF_PRESETS) + "}",
        ("gguf-q4_k_m", "gguf-q8_0"),
    ),
}


def known_ids() -> tuple[str, ...]:
    """Example ids of every registered backend (what error messages list)."""
    return tuple(qid for name in BACKENDS if name in ID_FORMS for qid in ID_FORMS[name].examples)


def _known_text() -> str:
    grammars = "; ".join(ID_FORMS[name].grammar for name in BACKENDS if name in ID_FORMS)
    return f"{', '.join(known_ids())} ({grammars})"


def parse_quantizer_id(qid: str) -> QuantSpec:
    """Parse and validate a quantizer id; raise :class:`QuantizerError` (one line) otherwise."""
    if not isinstance(qid, str):
        raise QuantizerError(f"quantizer id must be a string, got {type(qid).__name__}; known: {_known_text()}")
    text = qid.strip()
    if not text:
        raise QuantizerError(f"empty quantizer id; known: {_known_text()}")
    backend = text.split("-", 1)[0]
    form = ID_FORMS.get(backend)
    if form is None:
        raise QuantizerError(f"unknown quantizer '{text}'; known: {_known_text()}")
    if backend not in BACKENDS:
        raise QuantizerError(
            f"quantizer '{text}' needs the '{backend}' backend, which this version of unlearn-assert does not provide; "
            f"known: {_known_text()}"
        )
    match = form.pattern.fullmatch(text)
    if match is None:
        raise QuantizerError(f"malformed quantizer '{text}', expected {form.grammar}; known: {_known_text()}")
    return form.parse(match, text, backend)


def split_id_list(text: str, canonical: Callable[[str], str], what: str, example: str) -> tuple[str, ...]:
    """Split an option value like ``"rtn-w4g128, rtn-w8"`` (commas and/or whitespace) into ids,
    each checked by ``canonical`` (which raises on a bad id and spells a good one one way).

    Empty entries (``"a,,b"``, a trailing comma) and duplicates (also spelled differently, e.g.
    ``rtn-w8`` and ``rtn-w8-sym``) are errors: each would silently change which items run.
    """
    parts = [part.strip() for part in str(text).split(",")]
    if not any(parts):
        raise QuantizerError(f"no {what}s given; pass a comma-separated list such as {example}")
    if not all(parts):
        raise QuantizerError(f"empty entry in {what} list '{text}'; remove the extra comma")
    ids: list[str] = []
    seen: dict[str, str] = {}
    for part in parts:
        for vid in part.split():
            key = canonical(vid)
            if key in seen:
                twice = f"'{vid}'" if seen[key] == vid else f"'{seen[key]}' and '{vid}'"
                raise QuantizerError(f"{what} list '{text}' names {twice} twice; list each {what} once")
            seen[key] = vid
            ids.append(vid)
    return tuple(ids)
