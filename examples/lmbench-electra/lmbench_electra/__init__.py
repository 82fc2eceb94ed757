"""lmbench-electra: ELECTRA replaced-token detection as an external lmbench objective plugin.

Installed separately from lmbench; lmbench finds it through the `lmbench.objectives` entry point
(`electra = "lmbench_electra.objective:Electra"`), never by import from the core.
"""

from lmbench_electra.objective import Electra, ElectraConfig

__all__ = ["Electra", "ElectraConfig"]
__version__ = "0.1.0"
