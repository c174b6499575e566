"""Training world: data, base models, fine-tuning, out-of-fold outputs, the fit pipeline.

Needs the ``train`` extra (torch, transformers, scikit-learn, skl2onnx); nothing in the scoring
path imports this package.
"""
