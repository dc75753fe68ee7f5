"""isle build: Containerfile parsing and the builder."""
