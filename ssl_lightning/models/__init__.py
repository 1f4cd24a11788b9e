"""models of ssl_lightning."""
