"""Inference runtimes other than PyTorch, measured beside a step as its peers (llama.cpp), by
the same protocol: the same token windows, prompt, decode length and thread count."""
