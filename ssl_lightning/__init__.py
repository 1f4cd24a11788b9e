"""ssl-lightning: self-supervised learning (SimCLR, Barlow Twins) on scientific images."""

__version__ = "0.1.0"
