"""The README's Python client example, run as written (a script of its own) against a real server."""

from __future__ import annotations

import asyncio
import os
import re
import sys

import ml_serving
from ml_serving import BanditClient
from ml_serving_tools.paths import ROOT

README = ROOT / "README.md"


def readme_python_example() -> str:
    """The python block of the README's "Python client" section."""
    section = README.read_text().split("## Python client", 1)[1]
    return re.search(r"```python\n(.*?)```", section, re.DOTALL).group(1)


async def run_script(code: str, address: str) -> tuple[int, str, str]:
    """Run `code` in a new interpreter with ML_SERVING_ADDR set, without blocking the server's event loop."""
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-c", code, env={**os.environ, "ML_SERVING_ADDR": address},
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    stdout, stderr = await asyncio.wait_for(process.communicate(), timeout=60)
    return process.returncode, stdout.decode(), stderr.decode()


async def test_readme_python_example_runs_as_written(mesh):
    address = f"127.0.0.1:{mesh.port}"
    async with BanditClient(address=address) as bandits:  # the bandit `make up` creates, as it creates it
        try:
            await bandits.create_bandit("demo", ["model-a", "model-b", "model-c"], context_dimension=3)
        except ml_serving.AlreadyExistsError:
            pass
        returncode, stdout, stderr = await run_script(readme_python_example(), address)
        assert returncode == 0, stderr
        assert stdout.strip() in {"model-a", "model-b", "model-c"}
        assert (await bandits.get_stats("demo")).total_reward_count >= 1
