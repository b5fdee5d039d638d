"""Client works: the shared local-training loop and its method-specific variants."""
