"""Models: the shared contract, shared parts (encoders, label attention) and one module per system."""
