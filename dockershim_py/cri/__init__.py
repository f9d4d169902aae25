"""gRPC adapters: one small method per CRI RPC, turning protobuf requests into domain calls and back."""
