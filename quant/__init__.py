"""Ground floor shared by kernels/ and optimizers/: the packed storage layouts of quantized weights."""
