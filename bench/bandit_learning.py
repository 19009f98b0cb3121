"""Learning benchmark of the Bandit policies against MABWiser and Vowpal Wabbit.

    python bench/bandit_learning.py            # every environment, 5 seeds
    python bench/bandit_learning.py --quick    # a smoke run in under a minute

The environments, policies and tables live in ml_serving_tools (bandit_environments,
bandit_agents, bandit_benchmark); tests/bandit/unit/test_learning.py runs the same code.
"""

import os

# One BLAS thread per worker process: the matrices are small and the workers fill the cores.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")

from ml_serving_tools.bandit_benchmark import main  # noqa: E402

if __name__ == "__main__":
    main()
