"""The local endpoint's fast paths: job hand-over, batched reports, job ids, public reads."""

from __future__ import annotations

import os
import uuid

import pytest

from rxrunpod.local import _jobs

# -- job ids ------------------------------------------------------------------


def test_job_ids_read_urandom_once_per_256(monkeypatch: pytest.MonkeyPatch) -> None:
    reads: list[int] = []
    original = os.urandom

    def counting(size: int) -> bytes:
        reads.append(size)
        return original(size)

    monkeypatch.setattr(_jobs, "_random_bytes", _jobs._RandomBytes())
    monkeypatch.setattr(os, "urandom", counting)
    ids = {_jobs.new_job_id(sync=False) for _ in range(512)}

    assert len(ids) == 512
    assert len(reads) == 2


def test_job_ids_are_version_4_uuids() -> None:
    job_id = _jobs.new_job_id(sync=True)
    parsed = uuid.UUID(job_id.removeprefix("sync-").removesuffix("-u1"))

    assert job_id.startswith("sync-")
    assert job_id.endswith("-u1")
    assert parsed.version == 4
    assert parsed.variant == uuid.RFC_4122
