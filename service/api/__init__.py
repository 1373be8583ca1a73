"""The HTTP layer: request schemas, routers, dependencies, auth, error mapping, middleware."""
