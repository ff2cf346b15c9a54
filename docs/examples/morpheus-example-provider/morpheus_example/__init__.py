"""An example Morpheus provider plugin (see docs/plugins.md)."""
