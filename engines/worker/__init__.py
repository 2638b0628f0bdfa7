"""The worker side: code that runs in worker processes. It imports only the standard library, the data
stack (numpy, pandas, pyarrow, cloudpickle, orjson, matplotlib) and `oml` — never the server."""
