"""physioserve: multimodal physiological foundation model, from raw recordings to a served API.

This package is the served path (numpy, scipy, readers, onnxruntime, bentoml). It never imports torch;
`training/` and `export/` build on it.
"""

__version__ = "0.1.0"
