"""Test support that plugin authors can import (needs pytest)."""
