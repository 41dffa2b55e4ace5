"""The worker: trains the global model on a local shard that never leaves the machine."""
