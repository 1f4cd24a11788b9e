"""methods of ssl_lightning."""
