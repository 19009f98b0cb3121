"""The Inference service's domain: plain Python, no gRPC, protobuf or HTTP imports."""
