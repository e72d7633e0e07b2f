"""torch -> ONNX export of the inference model into a model bundle (imports torch; never imported by `physioserve`).

`export.build.export_bundle` writes a checked bundle; `physioserve export` (export.cli) is its command.
"""
