"""The project's own small default networks (ONNX) and their metadata."""
