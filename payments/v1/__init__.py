"""Generated gRPC and protobuf code of protos/payments/v1 (do not edit; run make proto)."""
