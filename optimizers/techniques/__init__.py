"""One module per executable technique; the module name is the technique's name."""
