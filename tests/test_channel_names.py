"""Channel recognition on the channel lists of public sleep datasets, and the spellings real files use.

Each list is written from the dataset's documentation (channel labels and rates as its EDF/WFDB
headers give them); the expected pick per modality follows the documented preference order of
`modalities.CHANNEL_ALIASES`. Rates matter: a channel below 50 Hz is left out with a note.
"""

from __future__ import annotations

import numpy as np
import pytest

from physioserve.io.common import choose_modalities
from physioserve.io.errors import RecordError
from physioserve.modalities import CHANNEL_ALIASES, map_channels, modality_of, normalise_channel_name
from physioserve.recording import Channel

# name: ({channel: rate in Hz}, {modality: expected channel})
DATASETS: dict[str, tuple[dict[str, float], dict[str, str]]] = {
    # Sleep-EDF Expanded, sleep cassette (SC*-PSG.edf): EMG submental is a 1 Hz envelope
    "sleep-edf SC": (
        {"EEG Fpz-Cz": 100, "EEG Pz-Oz": 100, "EOG horizontal": 100, "Resp oro-nasal": 1, "EMG submental": 1,
         "Temp rectal": 1, "Event marker": 1},
        {"eeg": "EEG Fpz-Cz", "eog": "EOG horizontal"},
    ),
    # Sleep-EDF Expanded, sleep telemetry (ST*-PSG.edf): EMG at 100 Hz
    "sleep-edf ST": (
        {"EEG Fpz-Cz": 100, "EEG Pz-Oz": 100, "EOG horizontal": 100, "EMG submental": 100, "Event marker": 1},
        {"eeg": "EEG Fpz-Cz", "eog": "EOG horizontal", "emg": "EMG submental"},
    ),
    # SHHS visit 1 (NSRR EDFs): EEG C4-A1 as 'EEG', C3-A2 as 'EEG(sec)'; EOG at 50 Hz
    "SHHS": (
        {"SaO2": 1, "H.R.": 1, "EEG(sec)": 125, "ECG": 125, "EMG": 125, "EOG(L)": 50, "EOG(R)": 50, "EEG": 125,
         "THOR RES": 10, "ABDO RES": 10, "POSITION": 1, "LIGHT": 1, "NEW AIR": 10, "OX stat": 1},
        {"eeg": "EEG", "eog": "EOG(L)", "emg": "EMG", "ecg": "ECG"},
    ),
    # MESA sleep (NSRR EDFs): EEG1 Fz-Cz, EEG2 Cz-Oz, EEG3 C4-M1; 'Leg' is leg EMG; '*_Off' lead-off flags
    "MESA": (
        {"EKG": 256, "EOG-L": 256, "EOG-R": 256, "EMG": 256, "EEG1": 256, "EEG2": 256, "EEG3": 256, "Pres": 32,
         "Flow": 32, "Snore": 32, "Thor": 32, "Abdo": 32, "Leg": 32, "Therm": 32, "Pos": 32, "EKG_Off": 1,
         "EOG-L_Off": 1, "EOG-R_Off": 1, "EMG_Off": 1, "EEG1_Off": 1, "SpO2": 1, "HR": 1, "Pleth": 256,
         "OxStatus": 1, "DHR": 256},
        {"eeg": "EEG1", "eog": "EOG-L", "emg": "EMG", "ecg": "EKG"},
    ),
    # CAP Sleep Database (PhysioNet capslpdb, e.g. n1.edf): DX1-DX2 / SX1-SX2 are the legs
    "CAP": (
        {"Fp2-F4": 512, "F4-C4": 512, "C4-P4": 512, "P4-O2": 512, "F8-T4": 512, "T4-T6": 512, "FP1-F3": 512,
         "F3-C3": 512, "C3-P3": 512, "P3-O1": 512, "F7-T3": 512, "T3-T5": 512, "C4-A1": 512, "ROC-LOC": 512,
         "EMG1-EMG2": 512, "ECG1-ECG2": 512, "DX1-DX2": 512, "SX1-SX2": 512, "SAO2": 1, "HR": 1, "PLETH": 128,
         "STAT": 1, "MIC": 512},
        {"eeg": "C4-A1", "eog": "ROC-LOC", "emg": "EMG1-EMG2", "ecg": "ECG1-ECG2"},
    ),
    # DREAMS Subjects database (University of Mons): three chin EMG channels
    "DREAMS": (
        {"ECG": 200, "FP1-A2": 200, "CZ-A1": 200, "EMG1": 200, "EOG1": 200, "VTH": 12.5, "VAB": 12.5,
         "NAF2P-A1": 100, "NAF1": 100, "PHONO": 200, "PR": 12.5, "SAO2": 12.5, "PCPAP": 12.5, "POS": 12.5,
         "EOG2": 200, "O1-A2": 200, "FP2-A1": 200, "O2-A1": 200, "CZ2-A1": 200, "EMG2": 200, "PULSE": 12.5,
         "VTOT": 12.5, "EMG3": 200},
        {"eeg": "CZ-A1", "eog": "EOG1", "emg": "EMG1", "ecg": "ECG"},
    ),
    # ISRUC-Sleep: chin EMG and ECG are labelled X1 and X2, which no name can tell: --channel-map
    "ISRUC": (
        {"LOC-A2": 200, "ROC-A1": 200, "F3-A2": 200, "C3-A2": 200, "O1-A2": 200, "F4-A1": 200, "C4-A1": 200,
         "O2-A1": 200, "X1": 200, "X2": 200, "X3": 200, "X4": 200, "X5": 200, "X6": 200, "DC3": 200, "X7": 200,
         "X8": 200, "SaO2": 12.5, "DC8": 12.5},
        {"eeg": "F3-A2", "eog": "LOC-A2"},
    ),
    # Haaglanden Medisch Centrum sleep staging database (PhysioNet hmc-sleep-staging)
    "HMC": (
        {"EEG F4-M1": 256, "EEG C4-M1": 256, "EEG O2-M1": 256, "EEG C3-M2": 256, "EMG chin": 256,
         "EOG E1-M2": 256, "EOG E2-M2": 256, "ECG": 256},
        {"eeg": "EEG F4-M1", "eog": "EOG E1-M2", "emg": "EMG chin", "ecg": "ECG"},
    ),
    # Montreal Archive of Sleep Studies, SS3 (CLE = computed linked ears)
    "MASS": (
        {"EEG Fp1-CLE": 256, "EEG Fp2-CLE": 256, "EEG F3-CLE": 256, "EEG F4-CLE": 256, "EEG F7-CLE": 256,
         "EEG F8-CLE": 256, "EEG C3-CLE": 256, "EEG C4-CLE": 256, "EEG P3-CLE": 256, "EEG P4-CLE": 256,
         "EEG O1-CLE": 256, "EEG O2-CLE": 256, "EEG T3-CLE": 256, "EEG T4-CLE": 256, "EEG T5-CLE": 256,
         "EEG T6-CLE": 256, "EEG Fpz-CLE": 256, "EEG Cz-CLE": 256, "EEG Pz-CLE": 256, "EEG Oz-CLE": 256,
         "EEG A2-CLE": 256, "EOG Left Horiz": 256, "EOG Right Horiz": 256, "EMG Chin1": 256, "EMG Chin2": 256,
         "EMG Chin3": 256, "ECG ECGI": 256, "Resp Belt Thor": 64, "Resp Belt Abdo": 64},
        {"eeg": "EEG F3-CLE", "eog": "EOG Left Horiz", "emg": "EMG Chin1", "ecg": "ECG ECGI"},
    ),
    # PhysioNet/CinC Challenge 2018 (every record)
    "PhysioNet 2018": (
        {"F3-M2": 200, "F4-M1": 200, "C3-M2": 200, "C4-M1": 200, "O1-M2": 200, "O2-M1": 200, "E1-M2": 200,
         "Chin1-Chin2": 200, "ABD": 200, "CHEST": 200, "AIRFLOW": 200, "SaO2": 200, "ECG": 200},
        {"eeg": "F3-M2", "eog": "E1-M2", "emg": "Chin1-Chin2", "ecg": "ECG"},
    ),
    # MIT-BIH Polysomnographic Database: the headers of slp01a and slp04 in ../shared/data/real/slpdb
    "MIT-BIH slpdb slp01a": (
        {"ECG": 250, "BP": 250, "EEG (C4-A1)": 250, "Resp (sum)": 250},
        {"eeg": "EEG (C4-A1)", "ecg": "ECG"},
    ),
    "MIT-BIH slpdb slp04": (
        {"ECG": 250, "BP": 250, "EEG (C3-O1)": 250, "Resp (nasal)": 250},
        {"eeg": "EEG (C3-O1)", "ecg": "ECG"},
    ),
}


def _channels(rates: dict[str, float]) -> dict[str, Channel]:
    return {name: Channel(name, np.empty(0), float(fs), "uV") for name, fs in rates.items()}


@pytest.mark.parametrize("dataset", list(DATASETS))
def test_public_dataset_channel_lists(dataset):
    rates, expected = DATASETS[dataset]
    chosen, notes = choose_modalities(_channels(rates), None, where=dataset)
    assert chosen == expected
    low = [name for name, fs in rates.items() if fs < 50 and modality_of(name) is not None]
    for name in low:  # a recognised channel too slow for the model is named in a note
        assert any(name in note and "Hz" in note for note in notes), (name, notes)


def test_sleep_edf_sc_notes_the_emg_envelope():
    _, notes = choose_modalities(_channels(DATASETS["sleep-edf SC"][0]), None, where="SC4001E0")
    assert notes == ["emg: 'EMG submental' left out: sampled at 1 Hz, below the 50 Hz the model needs"]


def test_channel_map_overrides_the_patterns():
    rates, _ = DATASETS["ISRUC"]
    chosen, _ = choose_modalities(_channels(rates), {"emg": "X1", "ecg": "X2", "eeg": "C4-A1"}, where="ISRUC")
    assert chosen == {"eeg": "C4-A1", "eog": "LOC-A2", "emg": "X1", "ecg": "X2"}
    with pytest.raises(RecordError, match="eeg='C5-A1' names no channel"):
        choose_modalities(_channels(rates), {"eeg": "C5-A1"}, where="ISRUC")


@pytest.mark.parametrize("name", [
    "C3-A1", "C3-A2", "C4-M1", "Cz-A1", "O1-A1", "Fp1-A1", "FP2-F4", "Fpz-Cz", "Pz-Oz", "EEG C3-A2", "C3:A2",
    "C3/A2", "C3_M2", "EEG(sec)", "EEG2", "EEG 2", "eeg", "F3-M2", "C4A1", "EEG (C4-A1)", "T8-P8", "C3-(M1+M2)/2",
    "EEG C4-LER", "F3-AVG", "Oz-Cz", "C4", "EEG F3-A1A2",
])
def test_eeg_spellings(name):
    assert modality_of(name) == "eeg", normalise_channel_name(name)


@pytest.mark.parametrize("name", [
    "E1", "E2", "LOC", "ROC", "EOG1-A1", "EOG(L)", "EOG(R)", "EOG horizontal", "LOC-A2", "ROC-A1", "E1-M2",
    "EOG E2-M1", "Left EOG", "EOG-L", "EOG Left Horiz", "ROC-LOC", "EOG1", "EOG", "HEOG", "EOG ROC-A1", "EOG dx",
])
def test_eog_spellings(name):
    assert modality_of(name) == "eog", normalise_channel_name(name)


@pytest.mark.parametrize("name", [
    "Chin1-Chin2", "Chin1-Chin3", "EMG1", "EMG chin", "Chin EMG", "submental", "EMG submental", "Chin", "EMG",
    "EMG1-EMG2", "EMG Chin2", "CHIN2-CHIN3",
])
def test_chin_emg_spellings(name):
    assert modality_of(name) == "emg", normalise_channel_name(name)


@pytest.mark.parametrize("name", [
    "LAT", "RAT", "Leg", "Leg L", "Leg/R", "EMG Leg/L", "EMG-LAT", "EMG LAT", "EMG RAT", "Left leg", "tibialis", "EMG Leg", "LLEG1-LLEG2",
    "RLeg", "Leg 1", "PLMl", "Anterior tibialis", "EMG Arm",
])
def test_leg_emg_is_never_chin(name):
    assert modality_of(name) is None


@pytest.mark.parametrize("name", ["ECG", "EKG", "ECG II", "ECG1-ECG2", "EKG1-EKG2", "ECG I", "ECG1", "ECGL", "MLII",
                                  "V5", "II", "ECG L-ECG R", "ECG LA-RA"])
def test_ecg_spellings(name):
    assert modality_of(name) == "ecg", normalise_channel_name(name)


@pytest.mark.parametrize("name", ["SaO2", "SpO2", "HR", "H.R.", "Pleth", "Resp (sum)", "BP", "Flow", "Thor", "Abdo",
                                  "Snore", "POSITION", "A1", "M2", "A1-A2", "EKG_Off", "Event marker", "PLETH", "X1",
                                  "Temp rectal", "DC3", "NAF2P-A1", "PR", "PULSE", "Light", "Pos"])
def test_other_channels_are_no_modality(name):
    assert modality_of(name) is None, normalise_channel_name(name)


def test_preference_order():
    assert map_channels(["C4-M1", "O1-M2", "F4-M1", "F3-M2"]) == {"eeg": "F3-M2"}
    assert map_channels(["O2-M1", "C4-A1", "F4-A1"]) == {"eeg": "F4-A1"}
    assert map_channels(["O2-M1", "C4-A1"]) == {"eeg": "C4-A1"}
    assert map_channels(["Fp1-A2", "O1-A2"]) == {"eeg": "O1-A2"}
    assert map_channels(["Fp2-F4", "C4-A1"]) == {"eeg": "C4-A1"}  # mastoid-referenced before bipolar
    assert map_channels(["Pz-Oz", "Fpz-Cz"]) == {"eeg": "Fpz-Cz"}
    assert map_channels(["C4", "EEG", "Cz-Oz"]) == {"eeg": "Cz-Oz"}
    assert map_channels(["EEG(sec)", "EEG"]) == {"eeg": "EEG"}
    assert map_channels(["E2-M1", "E1-M2"]) == {"eog": "E1-M2"}
    assert map_channels(["Chin2-Chin3", "Chin1-Chin2", "EMG"]) == {"emg": "Chin1-Chin2"}


def test_patterns_are_recorded_as_text():
    assert set(CHANNEL_ALIASES) == {"eeg", "eog", "emg", "ecg"}
    assert all(isinstance(p, str) and p.startswith("^") for ps in CHANNEL_ALIASES.values() for p in ps)
