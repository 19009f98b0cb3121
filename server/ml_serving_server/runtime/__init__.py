"""What every service shares: server, interceptors, status mapping, health, observability, settings."""
