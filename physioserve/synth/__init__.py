"""Synthetic PhysioNet-2018-shaped corpora: `physioserve synth` (see docs/SYNTHETIC.md).

Modules, read top to bottom: `hypnograms` (the packaged real hypnograms, user files), `subject`
(age, sex and per-subject constants), `physiology` (stage tables, control signals, one night),
`brain` (EEG, EOG, chin EMG), `body` (breathing, respiratory events, SaO2, ECG), `artifacts`,
`labels` (the challenge's label conventions), `writer` (.hea/.mat/.arousal/-arousal.mat),
`corpus` (plans and parallel generation), `cli`. Nothing is imported here, so that
`physioserve --help` stays fast.
"""
