"""lmbench: fair comparisons of language-model pretraining objectives on matched backbones."""

__version__ = "0.1.0"
