"""lmbench's Hydra launcher and sweeper (`hydra/launcher=lmbench`, `hydra/sweeper=lmbench`).

Hydra only instantiates launchers and sweepers that live in the `hydra_plugins` namespace package,
so they are here rather than in `lmbench`; see `launcher.py`.
"""
