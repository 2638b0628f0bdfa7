"""pyqd's HTTP layer: app factory, routes, auth, settings, error mapping and the CLI."""
