"""twin: a self-hosted service that speaks as its owner.

The core package: configuration, the data home, the store, the chat model, the prompt format and the CLI.
It never imports torch, transformers or peft at module level, so `twin --help` stays instant.
"""

__version__ = "0.1.0"
