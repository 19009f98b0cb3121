"""Seeded learning simulations and Select timings: `python bench/bandit_learning.py [SEED]`.

The simulations live in ml_serving_tools.bandit_simulation, where the tests import them too.
"""

from ml_serving_tools.bandit_simulation import main

if __name__ == "__main__":
    main()
