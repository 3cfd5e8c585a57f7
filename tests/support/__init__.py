"""Test support: an operator harness and fault transports."""
