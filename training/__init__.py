"""Training side of physioserve (torch): the MultiMAE encoder, pretraining, probing and evaluation.

`training` imports `physioserve`; `physioserve` never imports `training`.
"""
