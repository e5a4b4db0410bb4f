"""Quantization primitives: small, pure tensor functions (quantize, pack, dequantize)
that the quantization techniques and the Triton kernels share."""
