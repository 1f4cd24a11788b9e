"""data of ssl_lightning."""
