"""Morpheus provider: local nats-server processes."""
