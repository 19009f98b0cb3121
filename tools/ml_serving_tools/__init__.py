"""Developer tooling for the mesh: code generation, the Envoy gateway config, local Redis and
PostgreSQL, and the `make up` / `make test` runners (console scripts `mesh-*`)."""
