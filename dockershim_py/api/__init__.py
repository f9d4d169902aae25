"""Generated CRI v1 (runtime.v1) protobuf and gRPC bindings; see proto/api.proto."""
