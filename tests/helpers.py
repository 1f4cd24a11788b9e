"""Composing `ssl-train`'s config in-process, as the command line would."""

from ssl_lightning.train import compose_run

__all__ = ["compose_run"]
