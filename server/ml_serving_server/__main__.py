"""`python -m ml_serving_server` / `ml-serving-mesh`: run the mesh with settings from the environment."""

from .app import main

if __name__ == "__main__":
    main()
