"""Downstream evaluation of pretrained backbones: zero-shot scoring, prompts, fill-mask, and the metrics
(span F1 for IOB2 tagging, accuracy / macro-F1 for classification, in lmbench.eval.metrics) they report.

Import the modules directly (e.g. `from lmbench.eval.metrics import SpanF1`); this file imports nothing.
"""
