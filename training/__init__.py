"""training: from chat exports to a LoRA adapter. Parsers, sessionizing, datasets, training, evaluation."""
