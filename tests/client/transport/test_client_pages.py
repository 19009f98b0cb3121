"""Iterating a List call's pages against a real server: the bandit service over Redis."""

from __future__ import annotations

import uuid

import ml_serving
from ml_serving import BanditClient


async def test_iter_bandits_and_pages_walk_every_page(mesh):
    prefix = f"paged-{uuid.uuid4().hex[:8]}-"
    names = [f"{prefix}{i}" for i in range(5)]  # with page_size=2: at least three pages of them
    async with BanditClient(address=f"127.0.0.1:{mesh.port}") as bandits:
        for name in names:
            await bandits.create_bandit(name, ["a", "b"])
        try:
            listed = [bandit.name async for bandit in bandits.iter_bandits(page_size=2)]
            pages = [page async for page in ml_serving.pages(bandits.list_bandits, page_size=2)]
        finally:
            for name in names:
                await bandits.delete_bandit(name)
    assert [name for name in listed if name.startswith(prefix)] == names
    assert listed == sorted(set(listed))  # name order, nothing twice
    assert len(pages) >= 3 and all(len(page.bandits) <= 2 for page in pages)
    assert [bandit.name for page in pages for bandit in page.bandits] == listed
