"""Python-based stand-ins for Triton's native `onnxruntime` and `pytorch` backends.

`onnxruntime/model.py` and `pytorch/model.py` are copied into the server's backend directory by
`controlplane.triton.server.backend_dir`; each only names its class from this package.
"""
