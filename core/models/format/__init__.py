"""What a model file says: the GGUF reader, ggml types, quant names, ModelInfo."""
