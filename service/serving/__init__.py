"""Serving: the chat service (chat), the decoding engine (engine), the LoRA slots and leases the
engine keeps (slots), and the router that maps a request's `model` to a version (router)."""
