"""The feature store's rules: plain Python, no gRPC, protobuf, Redis or SQL driver (a contract test checks)."""
