"""The stepping-curve fit methods a reconstruction can be asked for (``recon.curve``).

A module of its own, without NumPy or numba, so that the command line can offer the choice
without importing the reconstructor.
"""

from __future__ import annotations

from typing import Final, Literal

#: ``"auto"``: shape-aware when the scan's calibration series predicts that the first-harmonic
#: fit would be biased; or one of the two forced.
FitMode = Literal["auto", "first-harmonic", "shape-aware"]
FIT_MODES: Final[tuple[FitMode, ...]] = ("auto", "first-harmonic", "shape-aware")
