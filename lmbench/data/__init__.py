"""Data: the tokenizer, corpus sources, packed memory-mapped token blocks and the Lightning datamodule."""
