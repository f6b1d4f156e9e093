"""Evaluation of a trained run: clustering metrics, baselines and figures.

Submodules, imported on use so that importing this package stays cheap:

- :mod:`ggdsl.evaluate.metrics`: Hungarian and majority clustering accuracy, cluster usage,
  and k-means / PCA+GMM baselines on raw pixels (numpy, scipy, scikit-learn).
- :mod:`ggdsl.evaluate.figures`: image grids (one column per mixture component),
  interpolations, t-SNE, loss curves, video strips and GIFs (Matplotlib's Agg canvas, no
  ``pyplot``).
"""
