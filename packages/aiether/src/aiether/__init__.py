"""aiether: function-preserving depth growth for PyTorch models whose blocks form an ``nn.ModuleList``."""

__version__ = "0.1.0"

__all__ = ["__version__"]
