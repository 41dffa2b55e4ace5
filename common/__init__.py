"""Shared building blocks of fedmq: the wire codec, message types, broker topology and settings."""
