"""The terminal–operator wire contract: request signing, the settlement batch codec, typed models."""
