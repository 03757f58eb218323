"""adaptnn-core: shared numerics for the adaptnn libraries."""
__version__ = "0.1.0"
__all__ = ["__version__"]
