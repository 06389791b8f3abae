"""wangpd: keeps Wan2GP's model files complete, downloaded once into the HuggingFace cache."""

__version__ = "0.1.0"
