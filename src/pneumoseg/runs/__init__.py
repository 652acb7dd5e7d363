"""The run layer: the one place that knows what a run folder holds and how each file in it is
written, read and verified (checkpoints, post-processing, the ONNX manifest).

Training writes through it; inference, evaluation, export and the server read through it.
"""
