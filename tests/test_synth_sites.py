"""Site profiles: the training distribution keeps the PhysioNet layout, held-out sites lie outside it,
and EDF+ records carry the site's rate, names, units and the labels of the driving hypnogram."""

from __future__ import annotations

import filecmp

import numpy as np
import pytest

from physioserve.cli import main as cli_main
from physioserve.io import read_recording
from physioserve.synth.corpus import plan_corpus, synthesize_corpus
from physioserve.synth.montage import derivation
from physioserve.synth.sites import HELD_OUT_SITES, PHYSIONET_2018, SiteProfile, draw_training_site, site


def test_training_sites_keep_the_physionet_layout_and_vary_the_rest():
    rng = np.random.default_rng(0)
    draws = [draw_training_site(rng) for _ in range(300)]
    assert all(d.channels == PHYSIONET_2018.channels and d.fs == 200 and d.eeg_unit == "uV" for d in draws)
    for field in ("amplitude", "slope", "noise", "artifacts", "eyes_open", "mains"):
        values = np.array([getattr(d, field) for d in draws])
        assert values.std() > 0.05, field
    plans = plan_corpus(20, seed=3, hours=0.01)
    assert len({p.site.amplitude for p in plans}) == 20  # each record draws its own


def test_held_out_sites_lie_outside_the_training_distribution():
    rng = np.random.default_rng(1)
    draws = [draw_training_site(rng) for _ in range(2000)]
    ranges = {f: (min(getattr(d, f) for d in draws), max(getattr(d, f) for d in draws))
              for f in ("amplitude", "slope", "noise", "artifacts", "highpass_hz")}
    assert len(HELD_OUT_SITES) >= 3
    for profile in HELD_OUT_SITES.values():
        assert profile.held_out
        outside = [f for f, (lo, hi) in ranges.items() if not lo <= getattr(profile, f) <= hi]
        layout = [profile.fs != 200, profile.eeg != PHYSIONET_2018.eeg, profile.mains_hz != 60.0,
                  profile.eeg_unit != "uV"]
        assert profile.fs != 200 and sum(layout) >= 2, profile.name
        assert outside or profile.mains_hz != 60 or profile.mains > 5, profile.name


def test_site_profiles_refuse_what_cannot_be_made():
    with pytest.raises(ValueError, match="unknown electrode"):
        derivation("C5-M1")
    with pytest.raises(ValueError, match="ACTIVE-REFERENCE"):
        derivation("Chin")
    with pytest.raises(ValueError, match="unit"):
        SiteProfile(**{**PHYSIONET_2018.__dict__, "eeg_unit": "nV"})
    with pytest.raises(ValueError, match="known: physionet2018"):
        site("nowhere")


@pytest.mark.parametrize("name", sorted(HELD_OUT_SITES))
def test_held_out_site_edf_reads_back_with_rate_names_units_and_labels(tmp_path, name):
    profile = HELD_OUT_SITES[name]
    (plan,) = plan_corpus(1, seed=5, hours=0.1, site=profile)
    synthesize_corpus(tmp_path, 1, hours=0.1, seed=5, site=profile, fmt="edf", workers=1, progress=False)
    rec = read_recording(tmp_path / f"{plan.name}.edf", all_channels=True)
    assert set(rec.channels) == set(profile.channels)
    assert {c.fs for c in rec.channels.values()} == {float(profile.fs)}
    n = plan.hypnogram.n_samples // 200 * profile.fs
    eeg = rec.channels[profile.eeg[0]]
    assert len(eeg.data) == n
    eeg_uv = rec.channels[rec.modality_channels["eeg"]]
    assert eeg_uv.unit == "uV" and 1.0 < np.std(eeg_uv.data) < 300.0  # read as µV whatever the file's unit
    np.testing.assert_array_equal(rec.labels.stages, plan.hypnogram.stages)
    np.testing.assert_array_equal(np.round(rec.labels.arousal_regions_s * 200).astype(int), plan.hypnogram.arousal_regions)


def test_edf_records_are_deterministic(tmp_path):
    for out in ("a", "b"):
        synthesize_corpus(tmp_path / out, 2, hours=0.05, seed=2, site=site("legacy-100"), fmt="edf", workers=1, progress=False)
    for name in ("tr90-0001.edf", "tr90-0002.edf"):
        assert filecmp.cmp(tmp_path / "a" / name, tmp_path / "b" / name, shallow=False)


def test_training_sites_also_write_edf_at_200_hz(tmp_path):
    synthesize_corpus(tmp_path, 1, hours=0.05, seed=0, fmt="edf", workers=1, progress=False)
    rec = read_recording(tmp_path / "tr90-0001.edf")
    assert rec.modality_channels["eeg"] == "F3-M2" and rec.channels["F3-M2"].fs == 200.0


def test_cli_sites(tmp_path, capsys):
    assert cli_main(["synth", "--list-sites"]) == 0
    listed = capsys.readouterr().out
    assert all(name in listed for name in HELD_OUT_SITES) and "held out" in listed
    assert cli_main(["synth", str(tmp_path / "x"), "--records", "1", "--site", "nowhere", "--quiet"]) == 2
    assert "known:" in capsys.readouterr().err
    assert cli_main(["synth", str(tmp_path / "x"), "--records", "1", "--site", "ear-256", "--quiet"]) == 2
    assert "--format edf" in capsys.readouterr().err
    out = tmp_path / "edf"
    assert cli_main(["synth", str(out), "--records", "1", "--hours", "0.05", "--site", "ear-256",
                     "--format", "edf", "--quiet"]) == 0
    assert (out / "tr90-0001.edf").is_file() and (out / "age-sex.csv").is_file()
