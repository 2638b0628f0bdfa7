"""The Dask engine (`PYQD_ENGINE=dask`): `engine` on the API server, `host` on each Dask worker. Importing this
package does not import Dask."""

#: Where a Dask worker relays a script's `import oml` requests, under the API servers' URL (`server.routes.relay`).
RELAY_PATH = "/oml/api/pyqd/v1/relay"
#: Media type of a relayed request and of its answer.
RELAY_MEDIA_TYPE = "application/vnd.pyqd.relay+msgpack"
