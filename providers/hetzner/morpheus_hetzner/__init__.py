"""Morpheus provider plugin for Hetzner Cloud."""
