"""The engine, free of pytest: ``gate(...) -> Report`` is the one way a gate runs.

One job per module, dependencies pointing down the list:

* :mod:`.runner`: :class:`Gate` (which rows an item needs, in order; its verdict) and :func:`gate`;
* :mod:`.views`: what the fixtures see of a gate (:class:`GateView`: data, models, one variant at a time);
* :mod:`.report`: where the report is built (:class:`Report`, :func:`build_report`);
* :mod:`.verdicts`: the items of a run and the pure function that judges one;
* :mod:`.derive`: privleak against the reference and recovery, computed once from the rows;
* :mod:`.rows`: what is in a row (:class:`Row`), how its cache key is made, computing it;
* :mod:`.sources`: what turns U or T into a row's variant (the :class:`Source` protocol; a
  quantizer of the registry, a user's own quantized checkpoint and a relearning attack are its kinds);
* :mod:`.inputs`: data, calibration, fingerprints, loading and releasing models, and the
  option-time :func:`precheck`.

Nothing here imports torch at module level: the plugin imports this package only when
``--unlearn-model`` is given, and then loads models only when an item needs them.
"""

from __future__ import annotations

from .derive import Figures
from .inputs import Inputs, precheck
from .report import Report, build_report
from .rows import Row
from .runner import Gate, gate
from .sources import Applied, Source
from .verdicts import Verdict
from .views import GateView

__all__ = [
    "Applied",
    "Figures",
    "Gate",
    "GateView",
    "Inputs",
    "Report",
    "Row",
    "Source",
    "Verdict",
    "build_report",
    "gate",
    "precheck",
]
