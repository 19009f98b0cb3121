"""The router's rules and maths: plain Python, no gRPC, protobuf, Redis or HTTP (a contract test checks)."""
