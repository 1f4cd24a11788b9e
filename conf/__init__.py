"""Hydra configs of `ssl-train`: this folder ships inside the wheel as `ssl_lightning.conf`
(pyproject.toml maps it), so an installed package reads them with `pkg://ssl_lightning.conf`."""
