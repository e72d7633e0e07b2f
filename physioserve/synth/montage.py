"""Electrodes, references and derivations: how one brain is seen by `F3-M2`, `C3-A2`, `Fpz-Cz`, `E1-M2` ...

A derivation is the difference of two electrode potentials, as an EEG amplifier records it. Each
generator component (a frequency band of the background, alpha, spindles, K-complexes, slow waves,
scalp muscle, eye movements) has a topography: its gain at every electrode of the 10-20 system used
in sleep recordings, plus the mastoids (M1, M2), the ear lobes (A1, A2) and the EOG electrodes (E1
1 cm below the left outer canthus, E2 1 cm above the right; AASM manual v2.6, "EOG"). References
are not silent: the mastoid picks up about a quarter to a third of the vertex field at low
frequencies, the ear lobe a little less (Nunez & Srinivasan, Electric Fields of the Brain, 2006,
ch. 7), so ear-referenced derivations are slightly larger, and both pick up neck and jaw muscle and
the ECG field. Topographies (maxima, as in the AASM manual and the topographic studies cited per
row): slow waves and K-complexes frontal (Massimini et al., J Neurosci 24:6862, 2004; Colrain,
Sleep 28:255, 2005), theta central, alpha occipital with eyes closed (Niedermeyer's
Electroencephalography, 6th ed., ch. 9), slow spindles frontal and fast spindles centro-parietal
(De Gennaro & Ferrara, Sleep Med Rev 7:423, 2003; Mölle et al., Sleep 34:1411, 2011), vertex waves
and sawtooth waves maximal centrally (AASM manual v2.6).

Spatial coherence: a background component's potential at electrode e is g[e] * (w_G Z_G + w_L Z_e)
with independent Gaussian fields Z (one global, one local per electrode); low frequencies are
coherent over the scalp, muscle is local (Nunez & Srinivasan 2006, ch. 8).
`coefficients` turns that into per-derivation weights on the fields.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

ELECTRODES: tuple[str, ...] = (
    "Fpz", "Fz", "F3", "F4", "Cz", "C3", "C4", "Pz", "Oz", "O1", "O2",
    "M1", "M2", "A1", "A2", "E1", "E2",
)
_INDEX = {name.lower(): i for i, name in enumerate(ELECTRODES)}

# Gains per electrode (columns in ELECTRODES order). Rows: see the module doc for the sources.
#                      Fpz   Fz    F3    F4    Cz    C3    C4    Pz    Oz    O1    O2    M1    M2    A1    A2    E1    E2
TOPOGRAPHY: dict[str, np.ndarray] = {k: np.array(v, float) for k, v in {
    "delta":      (1.00, 1.00, 0.95, 0.95, 0.92, 0.88, 0.88, 0.78, 0.62, 0.62, 0.62, 0.30, 0.30, 0.22, 0.22, 0.62, 0.62),
    "theta":      (0.80, 0.95, 0.92, 0.92, 1.00, 0.95, 0.95, 0.90, 0.75, 0.75, 0.75, 0.28, 0.28, 0.20, 0.20, 0.60, 0.60),
    "alpha_bg":   (0.55, 0.62, 0.62, 0.62, 0.80, 0.76, 0.76, 0.95, 1.00, 1.00, 1.00, 0.32, 0.32, 0.25, 0.25, 0.40, 0.40),
    "beta":       (1.00, 1.00, 1.00, 1.00, 1.00, 0.95, 0.95, 0.90, 0.85, 0.85, 0.85, 0.30, 0.30, 0.22, 0.22, 0.85, 0.85),
    "alpha":      (0.22, 0.30, 0.30, 0.30, 0.45, 0.45, 0.45, 0.80, 1.00, 1.00, 1.00, 0.25, 0.25, 0.20, 0.20, 0.15, 0.15),
    "spindle_slow": (0.80, 1.00, 0.95, 0.95, 0.85, 0.75, 0.75, 0.60, 0.35, 0.35, 0.35, 0.15, 0.15, 0.10, 0.10, 0.60, 0.60),
    "spindle_fast": (0.45, 0.72, 0.68, 0.68, 1.00, 0.95, 0.95, 1.00, 0.60, 0.55, 0.55, 0.15, 0.15, 0.10, 0.10, 0.30, 0.30),
    "sigma":      (0.55, 0.85, 0.80, 0.80, 1.00, 0.90, 0.90, 0.85, 0.50, 0.45, 0.45, 0.15, 0.15, 0.10, 0.10, 0.40, 0.40),
    "slow_wave":  (1.00, 1.00, 0.95, 0.95, 0.92, 0.85, 0.85, 0.70, 0.50, 0.50, 0.50, 0.25, 0.25, 0.16, 0.16, 0.65, 0.65),
    "vertex":     (0.55, 0.88, 0.78, 0.78, 1.00, 0.85, 0.85, 0.80, 0.35, 0.35, 0.35, 0.18, 0.18, 0.10, 0.10, 0.40, 0.40),
    "sawtooth":   (0.70, 0.90, 0.85, 0.85, 1.00, 0.90, 0.90, 0.75, 0.40, 0.40, 0.40, 0.20, 0.20, 0.12, 0.12, 0.50, 0.50),
    # scalp muscle: frontalis, temporalis, masseter near the ears, neck under the mastoids and occiput
    "muscle":     (1.00, 0.40, 0.70, 0.70, 0.15, 0.45, 0.45, 0.25, 0.55, 0.60, 0.60, 1.10, 1.10, 1.30, 1.30, 1.00, 1.00),
    # the cardiac field: strongest at the mastoids and ears (neck vessels, the heart's dipole)
    "ecg":        (0.10, 0.10, 0.15, 0.15, 0.10, 0.20, 0.20, 0.15, 0.20, 0.25, 0.25, 1.00, 1.00, 1.20, 1.20, 0.30, 0.30),
    # eye dipole: horizontal gaze (E1 left-lower, E2 right-upper: opposite signs), vertical (blinks)
    "eye_h":      (0.00, 0.00, 0.10, -0.10, 0.00, 0.03, -0.03, 0.00, 0.00, 0.00, 0.00, 0.03, -0.03, 0.04, -0.04, 1.00, -1.00),
    "eye_v":      (0.90, 0.30, 0.25, 0.25, 0.06, 0.06, 0.06, 0.02, 0.01, 0.01, 0.01, 0.02, 0.02, 0.02, 0.02, -0.35, 0.45),
}.items()}
# Coherence: share of each background component's variance that is common to the whole scalp
# (w_G^2); the rest is local to each electrode (w_L^2 = 1 - w_G^2).
COHERENCE: dict[str, float] = {"delta": 0.75, "theta": 0.55, "alpha_bg": 0.5, "beta": 0.3, "alpha": 0.6, "sigma": 0.6, "muscle": 0.0}


@dataclass(frozen=True)
class Derivation:
    """`name` as written in a file; `active` and `reference` electrode indices into ELECTRODES."""

    name: str
    active: int
    reference: int

    def gain(self, component: str) -> float:
        """Gain of a spatially coherent component (an event) on this derivation: g[active] - g[reference]."""
        g = TOPOGRAPHY[component]
        return float(g[self.active] - g[self.reference])


_SPLIT = re.compile(r"^\s*(?:eeg\s+|eog\s+)?([A-Za-z]+[0-9z]?)\s*[-:/]\s*([A-Za-z]+[0-9z]?)\s*$", re.IGNORECASE)
_ALIASES = {"loc": "e1", "roc": "e2"}  # EOG names of older systems


def derivation(name: str) -> Derivation:
    """Parse `C4-M1`, `EEG C3-A2`, `Fpz-Cz`, `LOC-A2` ... into a Derivation; ValueError names the problem."""
    m = _SPLIT.match(name)
    if not m:
        raise ValueError(f"derivation {name!r}: expected ACTIVE-REFERENCE, e.g. C4-M1 or C3-A2")
    active, reference = (_ALIASES.get(p.lower(), p.lower()) for p in m.groups())
    for part in (active, reference):
        if part not in _INDEX:
            raise ValueError(f"derivation {name!r}: unknown electrode {part!r}; known: {', '.join(ELECTRODES)}")
    if active == reference:
        raise ValueError(f"derivation {name!r}: active and reference are the same electrode")
    return Derivation(name, _INDEX[active], _INDEX[reference])


def fields_of(derivations: list[Derivation]) -> list[int]:
    """The Gaussian fields the derivations need: -1 = the global field, else an electrode's local field."""
    fields = [-1]
    for d in derivations:
        fields += [e for e in (d.active, d.reference) if e not in fields]
    return fields


def coefficients(component: str, derivations: list[Derivation], fields: list[int]) -> np.ndarray:
    """[D, J] weights of each derivation on each field for a background component."""
    g = TOPOGRAPHY[component]
    share = COHERENCE[component]
    w_g, w_l = np.sqrt(share), np.sqrt(1.0 - share)
    out = np.zeros((len(derivations), len(fields)))
    index = {f: j for j, f in enumerate(fields)}
    for i, d in enumerate(derivations):
        out[i, 0] = (g[d.active] - g[d.reference]) * w_g
        out[i, index[d.active]] += g[d.active] * w_l
        out[i, index[d.reference]] -= g[d.reference] * w_l
    return out


def power_gain(component: str, d: Derivation) -> float:
    """Variance gain of a background component on derivation `d` (sum of squared field weights)."""
    c = coefficients(component, [d], fields_of([d]))
    return float((c**2).sum())
