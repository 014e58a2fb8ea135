"""Training helpers for the embedded default model.

`world` generates a synthetic world of coloured shapes with captions (the training data), and
`checker` reads a picture back in pixels to score whether it matches its prompt. Both use only
numpy and Pillow (plus scipy.ndimage in the checker), so they run fast on a CPU without torch.
"""
