"""OML Services' model repository: stored models (ONNX, ONNX_IMG, PYTHON), their metadata, and deployments
(a URI bound to a model). Model bytes are data here: never unpickled, never parsed; a sandboxed worker reads
them (`engines.scoring`)."""
