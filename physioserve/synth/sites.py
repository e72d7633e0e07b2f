"""Recording sites: what the lab and its hardware add to a night, and which of them a model never sees.

A `SiteProfile` says how a record is recorded and written: the sampling rate, the derivations and
their names, the physical units per modality, the hardware filter corners, the mains frequency and
how much of it leaks in, and the lab's signal character (amplitude scale, spectral slope, electrode
noise and impedance, artefact rate, share of eyes-open wake). Real cohorts vary in all of these
(the AASM manual v2.6 technical specifications allow EEG sampling from 200 Hz up and filters of
0.3-35 Hz; older systems record at 100-128 Hz; Europe has 50 Hz mains, America 60 Hz; ear or
mastoid references; EDF files carry µV, mV or V).

By default every record draws its own site from `draw_training_site`, a distribution around the
PhysioNet 2018 recordings (200 Hz, mastoid references, 60 Hz mains) that keeps their written layout
(13 channels, their names and units) so that `prepare` and the demo read the corpus as before.
`HELD_OUT_SITES` are named profiles whose settings lie outside that distribution (other rates,
references, units, mains, amplitudes, slopes, noise and artefact rates): they are used only when
named (`physioserve synth OUT --records N --site NAME`), to test a model on a domain it never saw.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

UNIT_SCALE = {"uV": 1.0, "mV": 1e-3, "V": 1e-6}  # physical value per µV


@dataclass(frozen=True)
class SiteProfile:
    """How a site records and writes a night (units of each field in its comment)."""

    name: str
    fs: int  # Hz, every channel
    eeg: tuple[str, ...]  # EEG derivations written, e.g. ("C3-M2", "C4-M1") or ("C3-A2", "C4-A1")
    eog: tuple[str, ...]  # EOG derivations, e.g. ("E1-M2",) or ("LOC-A2", "ROC-A1")
    emg: str  # chin EMG channel name
    ecg: str  # ECG channel name
    eeg_unit: str  # "uV" | "mV" | "V" (EOG and chin EMG share it)
    ecg_unit: str
    highpass_hz: float  # hardware high-pass of EEG/EOG (first order); 0 = DC-coupled
    lowpass_hz: float  # hardware low-pass of EEG/EOG/EMG (second order); 0 = none but the anti-alias
    mains_hz: float  # 50 or 60
    mains: float  # line-noise amplitude factor (1 = typical)
    amplitude: float  # EEG/EOG amplitude factor (amplifier calibration, skull, electrode type)
    slope: float  # added to each subject's spectral tilt: background x (f / 10 Hz) ** slope
    noise: float  # electrode and amplifier noise factor (impedance)
    artifacts: float  # rate factor of movement, sweat, electrode pops and bad leads
    eyes_open: float  # share of wake epochs with the eyes open (less alpha, blinks, saccades)
    held_out: bool = False  # True: outside the training distribution

    def __post_init__(self) -> None:
        from .montage import derivation

        for name in (*self.eeg, *self.eog):
            derivation(name)  # ValueError names a derivation the montage cannot make
        for unit in (self.eeg_unit, self.ecg_unit):
            if unit not in UNIT_SCALE:
                raise ValueError(f"site {self.name!r}: unit {unit!r} is not one of {', '.join(UNIT_SCALE)}")
        if self.fs < 50:
            raise ValueError(f"site {self.name!r}: fs {self.fs} Hz is below 50 Hz")

    @property
    def channels(self) -> tuple[str, ...]:
        """Channel names in the written order: EEG, EOG, chin EMG, breathing, SaO2, ECG."""
        return (*self.eeg, *self.eog, self.emg, "ABD", "CHEST", "AIRFLOW", "SaO2", self.ecg)

    def describe(self) -> str:
        """One line per setting, for `physioserve synth --list-sites`."""
        lp = f"{self.lowpass_hz:.3g} Hz" if self.lowpass_hz else "none"
        return (
            f"{self.name}{' (held out)' if self.held_out else ''}: {self.fs} Hz; EEG {', '.join(self.eeg)}; "
            f"EOG {', '.join(self.eog)}; EMG {self.emg}; ECG {self.ecg}; units EEG/EOG/EMG {self.eeg_unit}, "
            f"ECG {self.ecg_unit}; high-pass {self.highpass_hz:.3g} Hz, low-pass {lp}; mains {self.mains_hz:g} Hz "
            f"x{self.mains:.3g}; amplitude x{self.amplitude:.3g}; slope {self.slope:+.2f}; noise x{self.noise:.3g}; "
            f"artefacts x{self.artifacts:.3g}; eyes open {self.eyes_open:.0%} of wake"
        )


# The PhysioNet/CinC 2018 recordings (Ghassemi et al. 2018): 200 Hz, AASM mastoid montage, the
# real headers' names and units, US mains. The centre of the training distribution.
PHYSIONET_2018 = SiteProfile(
    name="physionet2018", fs=200,
    eeg=("F3-M2", "F4-M1", "C3-M2", "C4-M1", "O1-M2", "O2-M1"), eog=("E1-M2",), emg="Chin1-Chin2", ecg="ECG",
    eeg_unit="uV", ecg_unit="mV", highpass_hz=0.0, lowpass_hz=0.0, mains_hz=60.0, mains=1.0,
    amplitude=1.0, slope=0.0, noise=1.0, artifacts=1.0, eyes_open=0.3,
)

# Outside the training distribution (each on several settings at once).
HELD_OUT_SITES: dict[str, SiteProfile] = {p.name: p for p in (
    # A modern system with ear references: 256 Hz, lower amplitudes, strong 60 Hz pickup, mostly
    # eyes-open wake (a bright lab), two EOG channels.
    SiteProfile(
        name="ear-256", fs=256, eeg=("F3-A2", "F4-A1", "C3-A2", "C4-A1", "O1-A2", "O2-A1"), eog=("LOC-A2", "ROC-A1"),
        emg="Chin1-Chin2", ecg="ECG II", eeg_unit="uV", ecg_unit="mV", highpass_hz=0.16, lowpass_hz=70.0,
        mains_hz=60.0, mains=6.0, amplitude=0.6, slope=0.0, noise=1.5, artifacts=1.0, eyes_open=0.6, held_out=True,
    ),
    # An older system: 100 Hz, central EEG only with ear references, 0.5 Hz high-pass, 35 Hz
    # low-pass, noisy electrodes, 50 Hz mains, everything in mV.
    SiteProfile(
        name="legacy-100", fs=100, eeg=("C3-A2", "C4-A1"), eog=("LOC-A2", "ROC-A1"), emg="EMG chin", ecg="EKG",
        eeg_unit="mV", ecg_unit="mV", highpass_hz=0.5, lowpass_hz=35.0, mains_hz=50.0, mains=2.0,
        amplitude=1.0, slope=0.0, noise=3.0, artifacts=1.5, eyes_open=0.3, held_out=True,
    ),
    # Sleep-EDF-like bipolar derivations (Cz reference) plus one central channel: 500 Hz, values
    # in V, a flatter spectrum, three times the artefacts, 50 Hz mains.
    SiteProfile(
        name="bipolar-500", fs=500, eeg=("Fpz-Cz", "Pz-Oz", "C4-M1"), eog=("E1-M2", "E2-M1"), emg="Chin1-Chin2",
        ecg="ECG", eeg_unit="V", ecg_unit="V", highpass_hz=0.0, lowpass_hz=0.0, mains_hz=50.0, mains=1.0,
        amplitude=1.3, slope=0.5, noise=1.0, artifacts=3.0, eyes_open=0.2, held_out=True,
    ),
    # Home PSG: 128 Hz, two mastoid-referenced channels, a steeper spectrum, more noise and artefacts.
    SiteProfile(
        name="home-128", fs=128, eeg=("C4-M1", "F4-M1"), eog=("E1-M2",), emg="Chin1-Chin2", ecg="ECG",
        eeg_unit="uV", ecg_unit="mV", highpass_hz=0.3, lowpass_hz=45.0, mains_hz=60.0, mains=3.0,
        amplitude=0.8, slope=-0.4, noise=2.0, artifacts=2.0, eyes_open=0.4, held_out=True,
    ),
)}
SITES: dict[str, SiteProfile] = {PHYSIONET_2018.name: PHYSIONET_2018, **HELD_OUT_SITES}
CHANNEL_NAMES = PHYSIONET_2018.channels  # the 13 channels of the PhysioNet 2018 records, in their order


def draw_training_site(rng: np.random.Generator) -> SiteProfile:
    """A record's own site from the training distribution around PHYSIONET_2018 (same layout).

    Amplitude x log-normal(sigma 0.2), slope N(0, 0.12), noise and artefact factors x log-normal(0.4),
    mains factor x log-normal(0.8), eyes-open share U(0.15, 0.45); high-pass 0 (DC) or U(0.05, 0.3) Hz,
    low-pass none or U(50, 90) Hz. Rate, derivations, units and 60 Hz mains are PhysioNet's.
    """
    return replace(
        PHYSIONET_2018,
        name="training",
        highpass_hz=float(rng.uniform(0.05, 0.3)) if rng.random() < 0.5 else 0.0,
        lowpass_hz=float(rng.uniform(50.0, 90.0)) if rng.random() < 0.5 else 0.0,
        mains=float(np.exp(0.8 * rng.standard_normal())),
        amplitude=float(np.exp(0.2 * rng.standard_normal())),
        slope=float(0.12 * rng.standard_normal()),
        noise=float(np.exp(0.4 * rng.standard_normal())),
        artifacts=float(np.exp(0.4 * rng.standard_normal())),
        eyes_open=float(rng.uniform(0.15, 0.45)),
    )


def site(name: str) -> SiteProfile:
    """A named profile; ValueError lists the names."""
    if name not in SITES:
        raise ValueError(f"unknown site {name!r}; known: {', '.join(SITES)} (physioserve synth --list-sites)")
    return SITES[name]
