"""isle: one OCI image, run as a hardened container or inside a QEMU microVM."""

__version__ = "0.1.0"
__all__ = ["__version__"]
