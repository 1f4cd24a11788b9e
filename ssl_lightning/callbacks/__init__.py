"""callbacks of ssl_lightning."""
