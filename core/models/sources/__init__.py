"""Where models come from: local discovery, the Hugging Face Hub, targets users type."""
