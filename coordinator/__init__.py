"""The coordinator: owns the global model, applies updates asynchronously, broadcasts versions."""
