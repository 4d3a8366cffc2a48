"""Exporting a trained run to run elsewhere: its inference as an ONNX graph, in float32 or int8."""
