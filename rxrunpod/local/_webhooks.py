"""Webhook delivery: POST a job's final document to the URL it was submitted with."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import aiohttp

from ._faults import Stats

__all__ = ["WebhookSender"]

logger = logging.getLogger("rxrunpod.local")


class WebhookSender:
    """Deliver webhooks from the server loop, retrying like the hosted service.

    A delivery that fails (a connection error, a timeout or a non-2xx answer)
    is tried again ``retries`` more times, ``delay`` seconds apart; RunPod
    documents two retries 10 seconds apart.
    """

    def __init__(
        self, stats: Stats, *, retries: int = 2, delay: float = 10.0, timeout: float = 10.0
    ) -> None:
        self._stats = stats
        self._retries = retries
        self._delay = delay
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._session: aiohttp.ClientSession | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    def send(self, url: str, document: dict[str, Any]) -> None:
        """Start delivering ``document`` to ``url`` in the background."""
        task = asyncio.get_running_loop().create_task(self._deliver(url, document))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _deliver(self, url: str, document: dict[str, Any]) -> None:
        job_id = document.get("id")
        for attempt in range(self._retries + 1):
            problem = await self._post(url, document)
            if problem is None:
                self._stats.count_webhook("delivered")
                logger.info("webhook for job %s delivered (attempt %d)", job_id, attempt + 1)
                return
            if attempt < self._retries:
                self._stats.count_webhook("retried")
                logger.warning(
                    "webhook for job %s failed (%s); retrying in %.1f s",
                    job_id,
                    problem,
                    self._delay,
                )
                await asyncio.sleep(self._delay)
            else:
                self._stats.count_webhook("failed")
                logger.error(
                    "webhook for job %s failed (%s); giving up after %d attempts",
                    job_id,
                    problem,
                    attempt + 1,
                )

    async def _post(self, url: str, document: dict[str, Any]) -> str | None:
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=self._timeout)
        try:
            async with self._session.post(url, json=document) as response:
                await response.read()
                if 200 <= response.status < 300:
                    return None
                return f"HTTP {response.status}"
        except (aiohttp.ClientError, asyncio.TimeoutError) as error:
            return f"{type(error).__name__}: {error}"

    async def close(self) -> None:
        """Cancel deliveries still under way and close the HTTP session."""
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        if self._session is not None:
            await self._session.close()
            self._session = None
