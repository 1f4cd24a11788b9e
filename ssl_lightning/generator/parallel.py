"""Chunks of jets generated in a pool of spawned processes, handed back in a fixed order.

Reproducibility: jets are made in fixed-size chunks per class, each seeded from (seed, class,
chunk index), and returned in chunk order, so the output does not depend on the worker count.
Each block (chunk k of both classes) is shuffled with its own seed, which mixes the classes;
all jets are independent draws, so a block-wise shuffle is as good as a global one.
"""

from __future__ import annotations

import multiprocessing
import signal
from collections.abc import Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait

import numpy as np

from ssl_lightning.generator.config import SHUFFLE_KEY, JetGenConfig
from ssl_lightning.generator.physics import SCALARS, Chunk, EventGenerator

CHUNK_JETS = 64  # jets per class per chunk: fixed, so the output never depends on `workers`

_worker: EventGenerator | None = None


def _init_worker(config: JetGenConfig) -> None:
    """Runs once per spawned process: Pythia is set up per process, not per chunk. Ctrl-C
    reaches the whole process group: the parent alone handles it, and ends the workers."""
    global _worker
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _worker = EventGenerator(config)


def _worker_chunk(task: tuple[int, int, int]) -> Chunk:
    assert _worker is not None, "worker process was not initialised"
    return _worker.chunk(*task)


def _tasks(config: JetGenConfig) -> list[tuple[int, int, int]]:
    """(label, chunk index, size) in block order: chunk k of quarks, then of gluons."""
    per_class = config.num_jets // 2
    sizes = [min(CHUNK_JETS, per_class - start) for start in range(0, per_class, CHUNK_JETS)]
    return [(label, k, size) for k, size in enumerate(sizes) for label in (1, 0)]


def ordered_chunks(config: JetGenConfig, workers: int) -> Iterator[Chunk]:
    """All chunks in task order, generated in this process or in `workers` spawned ones.

    Only one task per worker is handed out at a time (not all, as Executor.map does), and after
    an error, Ctrl-C, a signal or `close()` the workers are terminated: nothing keeps running
    (each holds ~1 GB of Pythia) or finishes a chunk no one will read.
    """
    tasks = _tasks(config)
    if workers == 1:
        generator = EventGenerator(config)
        for task in tasks:
            yield generator.chunk(*task)
        return
    workers = min(workers, len(tasks))
    pool = ProcessPoolExecutor(
        max_workers=workers,
        mp_context=multiprocessing.get_context("spawn"),  # no forked locks or HDF5 handles
        initializer=_init_worker,
        initargs=(config,),
    )
    running: dict[int, Future[Chunk]] = {}
    finished: dict[int, Chunk] = {}  # done out of order, waiting for earlier chunks
    submitted = 0
    try:
        for i in range(len(tasks)):
            while i not in finished:
                while submitted < len(tasks) and len(running) < workers:
                    running[submitted] = pool.submit(_worker_chunk, tasks[submitted])
                    submitted += 1
                wait(running.values(), return_when=FIRST_COMPLETED)
                for j in [j for j, future in running.items() if future.done()]:
                    finished[j] = running.pop(j).result()
            yield finished.pop(i)
    except BaseException:  # GeneratorExit from close() too
        _terminate_workers(pool)
        raise
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def _terminate_workers(pool: ProcessPoolExecutor) -> None:
    """End the pool's processes now: shutdown() would wait for the chunks they are making.
    (Python 3.14 has ProcessPoolExecutor.terminate_workers(); before, the processes are only
    reachable through its private `_processes`.)"""
    for process in list((pool._processes or {}).values()):
        process.terminate()


def shuffled_blocks(config: JetGenConfig, chunks: Iterable[Chunk]) -> Iterator[Chunk]:
    """Quark and gluon chunk k merged and shuffled with block k's own seed."""
    shape = (3, config.image_size, config.image_size)
    it = iter(chunks)
    for k, (quark, gluon) in enumerate(zip(it, it, strict=True)):
        images = np.concatenate([quark.dense(shape), gluon.dense(shape)])
        rng = np.random.default_rng([config.seed, SHUFFLE_KEY, k])
        order = rng.permutation(len(images))
        flat = images[order].reshape(len(images), -1)
        rows, index = np.nonzero(flat)
        scalars = {
            key: np.concatenate([quark.scalars[key], gluon.scalars[key]])[order] for key in SCALARS
        }
        nnz = np.bincount(rows, minlength=len(images)).astype(np.int64)
        yield Chunk(
            scalars, nnz, index.astype(np.int32), flat[rows, index], quark.events + gluon.events
        )
